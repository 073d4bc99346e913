package io.bluegreen

import org.junit.Test

class UpdateBGProxyTest extends StepTestBase {
    @Test
    void switchesOnTheProxyNode() {
        step('updateBGProxy', [serviceName: 'books-ms', proxyNode: 'prod', color: 'green',
                               options: [nginxMode: 'container', nginxContainer: 'nginx']])
        assert stages == ['Update proxy']
        assert nodes == ['prod']
        assert argvs() == [['switch', 'books-ms', '--color', 'green']]
        assert calls[0].env.BLUEGREEN_NGINX_MODE == 'container'
        assert calls[0].env.BLUEGREEN_NGINX_CONTAINER == 'nginx'
    }

    @Test
    void theBooksPositionalSignature() {
        step('updateBGProxy', 'books-ms', 'prod', 'blue')
        assert stages == ['Update proxy']
        assert nodes == ['prod']
        assert argvs() == [['switch', 'books-ms', '--color', 'blue']]
    }

    @Test
    void withoutProxyNodeOnTheCurrentAgent() {
        step('updateBGProxy', [serviceName: 'books-ms', color: 'blue'])
        assert nodes == []
        assert argvs() == [['switch', 'books-ms', '--color', 'blue']]
    }
}
