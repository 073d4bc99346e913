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
                            '--proxy-url', 'http://10.100.198.201', '--http', '/api/v1/books']]
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
        assert argvs()[0][8..9] == ['--keep-old', '60']
    }

    @Test
    void firstDeploymentHasNoCurrentColor() {
        step('runBGPostIntegrationTests', params + [currentColor: ''])
        assert argvs()[0][2..3] == ['--current', '']
    }

    @Test
    void theBooksPositionalSignature() {
        step('runBGPostIntegrationTests', 'books-ms', '10.100.198.201', '10.100.198.202', 'prod', '', 'blue')
        assert nodes == ['prod']
        assert argvs() == [['post-test', 'books-ms', '--current', '', '--next', 'blue',
                            '--proxy-url', 'http://10.100.198.202']]
    }

    @Test
    void aClosureRunsInTheWorkspaceAndItsOutcomeGoesToTheProxyNode() {
        List seen = []
        step('runBGPostIntegrationTests', params + [tests: fixtures.recordingDomain(seen)])
        assert seen == ['http://10.100.198.201']
        assert argvs()[0][-2..-1] == ['--outcome', 'passed']
        assert calls[0].env.DOMAIN == null
    }
}
