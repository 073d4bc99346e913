package io.bluegreen

import org.junit.Test

class RunBGPreIntegrationTestsTest extends StepTestBase {
    @Test
    void cliTestsAgainstTheNewColor() {
        shHandler = { Map c -> c.returnStdout ? '127.0.0.1:32769\n' : 0 }
        step('runBGPreIntegrationTests', [serviceName: 'books-ms', color: 'green',
                                          httpPaths: ['/api/v1/books'], expectBody: 'v2'])
        assert stages == ['Run pre-integration tests']
        assert argvs() == [['address', 'books-ms', '--color', 'green'],
                           ['pre-test', 'books-ms', '--color', 'green', '--http', '/api/v1/books',
                            '--expect-body', 'v2']]
    }

    @Test
    void aFailureEndsInTheBooksError() {
        shHandler = { Map c -> c.returnStdout ? '127.0.0.1:32769' : 1 }
        try {
            step('runBGPreIntegrationTests', [serviceName: 'books-ms', color: 'green', testCommand: './integ.sh'])
            assert false: 'expected an error'
        } catch (PipelineError e) {
            assert e.message == 'Pre-integration tests failed'
        }
        // the CLI's pre-test stops the new color itself before the error
        assert argvs()[1] == ['pre-test', 'books-ms', '--color', 'green', '--cmd', './integ.sh']
    }

    @Test
    void aClosureRunsWithDomainAndItsFailureIsPassedToTheCli() {
        shHandler = { Map c -> c.returnStdout ? '127.0.0.1:32769' : 1 }
        List seen = []
        try {
            step('runBGPreIntegrationTests', [serviceName: 'books-ms', color: 'blue',
                                              tests: fixtures.recordingDomain(seen, 'boom')])
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Pre-integration tests failed'
        }
        assert seen == ['http://127.0.0.1:32769']
        assert argvs()[1] == ['pre-test', 'books-ms', '--color', 'blue', '--outcome', 'failed']
    }

    @Test
    void theBooksPositionalSignatureTakesTheTestsFromTheConfiguration() {
        shHandler = { Map c -> c.returnStdout ? '127.0.0.1:32769' : 0 }
        step('runBGPreIntegrationTests', 'books-ms', '10.100.198.201', 'green')
        assert argvs() == [['address', 'books-ms', '--color', 'green'], ['pre-test', 'books-ms', '--color', 'green']]
        assert calls*.env.CONSUL_HTTP_ADDR == ['http://10.100.198.201:8500'] * 2
    }

    @Test
    void aPassingClosure() {
        shHandler = { Map c -> c.returnStdout ? '127.0.0.1:32769' : 0 }
        List marks = []
        step('runBGPreIntegrationTests', [serviceName: 'books-ms', color: 'blue', tests: fixtures.marking(marks, 'ran')])
        assert marks == ['ran']
        assert argvs()[1] == ['pre-test', 'books-ms', '--color', 'blue', '--outcome', 'passed']
    }
}
