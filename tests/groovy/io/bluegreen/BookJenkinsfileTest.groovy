package io.bluegreen

import org.junit.Test

/**
 * The book's own Jenkinsfile (its blue-green part, tests/groovy/resources/jenkins/
 * book-blue-green.jenkins) runs against this library's steps; what its calls lack (the image,
 * the tests) comes from the CLI's configuration, here a bluegreen.toml in the workspace.
 */
class BookJenkinsfileTest extends StepTestBase {
    /** A registry where blue is live (or nothing, on a first deployment); tests as given. */
    void cli(String current, int postStatus = 0) {
        shHandler = { Map c ->
            switch (c.argv[0..1]) {
                case [['color', 'current']]: return "${current}\n".toString()
                case [['color', 'next']]: return current == 'blue' ? 'green\n' : 'blue\n'
                default: break
            }
            if (c.argv[0] == 'address') return '10.100.198.201:32771\n'
            if (c.argv[0] == 'post-test') return postStatus
            return c.returnStatus ? 0 : (c.returnStdout ? '' : null)
        }
    }

    @Test
    void theBooksBlueGreenCallsRunOnTheseSteps() {
        workspace['bluegreen.toml'] = 'image = "10.100.198.200:5000/books-ms"\nhttp = ["/api/v1/books"]\n'
        cli('blue')
        runScript('book-blue-green.jenkins')
        assert nodes == ['cd', 'prod', 'prod']
        assert stages == ['Deploy', 'Run pre-integration tests', 'Update proxy', 'Run post-integration tests']
        assert argvs() == [
                ['color', 'current', 'books-ms'],
                ['color', 'next', '--current', 'blue'],
                ['deploy', 'books-ms', '--color', 'green'],
                ['address', 'books-ms', '--color', 'green'],
                ['pre-test', 'books-ms', '--color', 'green'],
                ['switch', 'books-ms', '--color', 'green'],
                ['post-test', 'books-ms', '--current', 'blue', '--next', 'green',
                 '--proxy-url', 'http://10.100.198.201']]
        List withDocker = calls.findAll { it.argv[0] in ['color', 'deploy', 'address', 'pre-test', 'post-test'] }
        assert withDocker.findAll { it.argv[1] != 'next' }.every {
            it.env.DOCKER_HOST == 'tcp://10.100.198.201:2375' && it.env.CONSUL_HTTP_ADDR == 'http://10.100.198.201:8500'
        }
        assertShellTextIsConstant()
    }

    @Test
    void aFirstDeploymentAndAFailedPostTestEndInTheBooksError() {
        cli('', 1)
        try {
            runScript('book-blue-green.jenkins')
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Post-integration tests failed'
        }
        assert argvs()[1] == ['color', 'next', '--current', '']
        assert argvs()[-1][0..5] == ['post-test', 'books-ms', '--current', '', '--next', 'blue']
    }
}
