package io.bluegreen

import org.junit.Test

class BlueGreenDeployAppTest extends StepTestBase {
    Map params = [appName: 'hello-world', file: 'compose.yaml', steps: '10,50,100']

    @Test
    void releasesInOneCall() {
        step('blueGreenDeployApp', params)
        assert stages == ['Release']
        assert argvs() == [['app', 'deploy', '--file', 'compose.yaml', '--steps', '10,50,100']]
    }

    @Test
    void confirmedThenPromoted() {
        step('blueGreenDeployApp', params + [confirm: true, stepWait: 5, keepOld: 60])
        assert stages == ['Release', 'Confirm', 'Promote']
        assert argvs() == [
                ['app', 'deploy', '--file', 'compose.yaml', '--steps', '10,50,100', '--step-wait', '5',
                 '--keep-old', '60', '--confirm'],
                ['app', 'promote', 'hello-world']]
    }

    @Test
    void rejectedInputAborts() {
        helper.registerAllowedMethod('input', [Map], { Map m -> throw new PipelineError('Aborted by user') })
        try {
            step('blueGreenDeployApp', params + [confirm: true])
            assert false: 'the rejected input must fail the build'
        } catch (PipelineError e) {
            assert e.message == 'Aborted by user'
        }
        assert stages == ['Release', 'Confirm', 'Abort']
        assert argvs()[-1] == ['app', 'abort', 'hello-world']
    }
}
