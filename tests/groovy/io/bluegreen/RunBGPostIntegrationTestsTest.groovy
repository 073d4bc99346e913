package io.bluegreen

import org.junit.Test

class RunBGPostIntegrationTestsTest extends StepTestBase {
    Map params = [serviceName: 'books-ms', prodIp: '10.100.198.201', proxyIp: '10.100.198.201',
                  proxyNode: 'prod', currentColor: 'blue', nextColor: 'green', httpPaths: ['/api/v1/books']]

    @Test
    void testsThroughTheProxyOnTheProxyNode() {
        step('runBGPostIntegrationTests', params)
        assert stages == ['Run post-integration tests']
        assert nodes == ['prod']
        assert argvs() == [['post-test', 'books-ms', '--current', 'blue', '--next', 'green',
                            '--proxy-url', 'http://10.100.198.201', '--keep-old', '0',
                            '--http', '/api/v1/books']]
        assert calls[0].returnStatus
    }

    @Test
    void aFailureEndsInTheBooksError() {
        shHandler = { Map c -> 1 }
        try {
            step('runBGPostIntegrationTests', params + [keepOld: 60])
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Post-integration tests failed'
        }
        assert argvs()[0][9] == '60'
    }

    @Test
    void firstDeploymentHasNoCurrentColor() {
        step('runBGPostIntegrationTests', params + [currentColor: ''])
        assert argvs()[0][2..3] == ['--current', '']
    }
}
