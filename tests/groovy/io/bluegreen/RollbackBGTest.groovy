package io.bluegreen

import org.junit.Test

class RollbackBGTest extends StepTestBase {
    @Test
    void rollsBackOnTheProxyNode() {
        step('rollbackBG', [serviceName: 'books-ms', proxyNode: 'prod', lockWait: 30, stopCurrent: true])
        assert stages == ['Rollback']
        assert nodes == ['prod']
        assert argvs() == [['rollback', 'books-ms', '--lock-wait', '30', '--stop']]
    }
}
