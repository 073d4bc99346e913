package io.bluegreen

import org.junit.Test

class BlueGreenDeployTest extends StepTestBase {
    Map params = [serviceName: 'books-ms', image: 'books-ms:2', prodIp: '10.100.198.201',
                  proxyIp: '10.100.198.201', proxyNode: 'prod', httpPaths: ['/api/v1/books']]

    /** The CLI's answers: current color blue, next green, tests as given. */
    void cli(int preStatus = 0, int postStatus = 0) {
        shHandler = { Map c ->
            switch (c.argv[0]) {
                case 'color': return c.argv[1] == 'current' ? 'blue\n' : 'green\n'
                case 'address': return '10.100.198.201:32770\n'
                case 'pre-test': return preStatus
                case 'post-test': return postStatus
                default: return c.returnStatus ? 0 : (c.returnStdout ? '' : null)
            }
        }
    }

    @Test
    void theBooksJenkinsfile() {
        cli()
        List built = []
        assert step('blueGreenDeploy', params + [build: { built << 'build' }, test: { built << 'test' }]) == 'green'
        assert built == ['build', 'test']
        assert stages == ['Build', 'Test', 'Deploy', 'Run pre-integration tests', 'Update proxy',
                          'Run post-integration tests']
        assert argvs()*.getAt(0) == ['recover', 'color', 'color', 'deploy', 'address', 'pre-test', 'switch',
                                     'post-test', 'record']
        assert argvs()[3] == ['deploy', 'books-ms', '--color', 'green', '--image', 'books-ms:2']
        assert argvs()[-1][0..9] == ['record', 'books-ms', '--image', 'books-ms:2', '--from', 'blue', '--to',
                                     'green', '--start', argvs()[-1][9]]
        assert argvs()[-1][10..11] == ['--result', 'ok']
        assert nodes == ['prod', 'prod']
        assert helper.callStack.find { it.methodName == 'lock' }.args[0] == [resource: 'bluegreen-books-ms']
        assertShellTextIsConstant()
    }

    @Test
    void aFailedPreTestStopsTheBuildWithTheBooksMessageAndRecordsIt() {
        cli(1, 0)
        try {
            step('blueGreenDeploy', params)
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Pre-integration tests failed'
        }
        assert !argvs()*.getAt(0).contains('switch')
        assert argvs()[-1][-4..-1] == ['--result', 'failed', '--failed-phase', 'pre-test']
    }

    @Test
    void aFailedPostTestIsRecorded() {
        cli(0, 1)
        try {
            step('blueGreenDeploy', params)
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Post-integration tests failed'
        }
        assert argvs()[-1][-4..-1] == ['--result', 'failed', '--failed-phase', 'post-test']
    }

    @Test
    void aRefusedPromotionGateStopsTheNewColor() {
        cli()
        helper.registerAllowedMethod('input', [Map], { Map m -> throw new RuntimeException('Aborted by user') })
        try {
            step('blueGreenDeploy', params + [promotionGate: true, lockResource: false])
            assert false
        } catch (RuntimeException e) {
            assert e.message == 'Aborted by user'
        }
        assert stages.contains('Promote')
        assert argvs().find { it[0] == 'stop' } == ['stop', 'books-ms', '--color', 'green']
        assert !argvs()*.getAt(0).contains('switch')
        assert helper.callStack.find { it.methodName == 'lock' } == null
    }
}
