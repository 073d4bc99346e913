package io.bluegreen

import groovy.json.JsonOutput
import org.junit.Test

/** blueGreenDeploy drives `bluegreen run` one phase per stage (the CLI's answers are mocked). */
class BlueGreenDeployTest extends StepTestBase {
    Map params = [serviceName: 'books-ms', image: 'books-ms:2', prodIp: '10.100.198.201',
                  proxyIp: '10.100.198.201', proxyNode: 'prod', httpPaths: ['/api/v1/books']]

    /** The phase a `run` call ends with: its --until, else post-test. */
    static String phase(List argv) {
        int i = argv.indexOf('--until')
        return i < 0 ? 'post-test' : argv[i + 1]
    }

    /** The phases as `run --json` names them (model.PHASES with model.PHASE_TITLES). */
    static final List STAGES = [[name: 'deploy', title: 'Deploy'], [name: 'pre-test', title: 'Run pre-integration tests'],
                                [name: 'switch', title: 'Update proxy'], [name: 'post-test', title: 'Run post-integration tests']]

    /** The CLI's answers: a run from blue to green through stages; exit status per phase as given. */
    void cli(Map status = [:], List stages = STAGES) {
        shHandler = { Map c ->
            switch (c.argv[0]) {
                case 'run':
                    if (c.returnStdout) return JsonOutput.toJson([paused_after: 'deploy', from: 'blue', to: 'green', stages: stages])
                    return status[phase(c.argv)] ?: 0
                case 'address': return '10.100.198.201:32770\n'
                default: return c.returnStatus ? 0 : (c.returnStdout ? '' : null)
            }
        }
    }

    List runCalls() {
        return argvs().findAll { it[0] == 'run' }
    }

    @Test
    void theBooksStagesEachOnePhaseOfOneRun() {
        cli()
        List built = []
        assert step('blueGreenDeploy', params + [build: fixtures.marking(built, 'build'),
                                                 test: fixtures.marking(built, 'test')]) == 'green'
        assert built == ['build', 'test']
        assert stages == ['Build', 'Test', 'Deploy', 'Run pre-integration tests', 'Update proxy',
                          'Run post-integration tests']
        assert argvs() == [
                ['recover', 'books-ms'],
                ['run', 'books-ms', '--until', 'deploy', '--json', '--proxy-url', 'http://10.100.198.201',
                 '--image', 'books-ms:2'],
                ['run', 'books-ms', '--resume', '--proxy-url', 'http://10.100.198.201', '--until', 'pre-test',
                 '--http', '/api/v1/books'],
                ['run', 'books-ms', '--resume', '--proxy-url', 'http://10.100.198.201', '--until', 'switch'],
                ['run', 'books-ms', '--resume', '--proxy-url', 'http://10.100.198.201', '--http', '/api/v1/books']]
        assert !argvs().any { it[0] in ['record', 'deploy', 'switch', 'pre-test', 'post-test'] }
        assert nodes == ['prod', 'prod', 'prod']   // recover, switch, post-tests: where nginx is
        assert helper.callStack.find { it.methodName == 'lock' }.args[0] == [resource: 'bluegreen-books-ms']
        assertShellTextIsConstant()
    }

    @Test
    void containerSettingsGoToTheFirstCallOnly() {
        cli()
        step('blueGreenDeploy', params + [port: 8080, scale: 2, containerEnv: [DB: 'db'], keepOld: 30])
        List first = runCalls()[0]
        assert first[-8..-1] == ['--image', 'books-ms:2', '--port', '8080', '--scale', '2', '--env', 'DB=db']
        assert runCalls().every { it.containsAll(['--keep-old', '30']) }
        assert runCalls()[1..-1].every { !it.contains('--image') && !it.contains('--port') }
    }

    @Test
    void gatesGoToEveryCallStepsAndStickyToTheFirst() {
        cli()
        step('blueGreenDeploy', params + [steps: '10,50,100', stepWait: 30, sticky: true, maxErrorRate: 1,
                                          maxLatencyRatio: 1.5, minRequests: 100, minRequestsWait: 60,
                                          gateQuery: 'up == 1', prometheusUrl: 'http://prom:9090'])
        List gates = ['--step-wait', '30', '--max-error-rate', '1', '--max-latency-ratio', '1.5',
                      '--min-requests', '100', '--min-requests-wait', '60', '--gate-query', 'up == 1',
                      '--prometheus-url', 'http://prom:9090']
        assert runCalls().size() == 4
        assert runCalls().every { Collections.indexOfSubList(it, gates) > 0 }
        assert Collections.indexOfSubList(runCalls()[0], ['--steps', '10,50,100', '--sticky']) > 0
        assert runCalls()[1..-1].every { !it.contains('--sticky') && !it.contains('--steps') }
        assertShellTextIsConstant()
    }

    @Test
    void noGateParametersNoGateArguments() {
        cli()
        step('blueGreenDeploy', params)
        assert !argvs().flatten().any { it.toString() in ['--max-error-rate', '--sticky', '--steps', '--step-wait'] }
    }

    @Test
    void thePreviewSecretIsACredentialNeverAnArgument() {
        cli()
        step('blueGreenDeploy', params + [previewSecretCredentialsId: 'preview'])
        assert calls.every { it.env.BLUEGREEN_PREVIEW_SECRET == 'secret-of-preview' }
        assert !argvs().flatten().any { it.toString().contains('preview') }
        assertShellTextIsConstant()
    }

    @Test
    void aFailedPreTestFailsWithTheBooksMessageAndRecovers() {
        cli(['pre-test': 1])
        try {
            step('blueGreenDeploy', params)
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Pre-integration tests failed'
        }
        assert runCalls().collect { phase(it) } == ['deploy', 'pre-test']
        assert argvs()[-1] == ['recover', 'books-ms']
        assert calls[-1].returnStatus   // a failing recover does not hide the tests' failure
    }

    @Test
    void aFailedPostTestFailsWithTheBooksMessage() {
        cli(['post-test': 1])
        try {
            step('blueGreenDeploy', params)
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Post-integration tests failed'
        }
        assert argvs()[-1] == ['recover', 'books-ms']
    }

    @Test
    void closuresRunInJenkinsAndTheirOutcomeResumesTheRun() {
        cli()
        List seen = []
        step('blueGreenDeploy', params + [preTests: fixtures.recordingDomain(seen),
                                          postTests: fixtures.recordingDomain(seen, 'proxy says no')])
        assert seen == ['http://10.100.198.201:32770', 'http://10.100.198.201']
        assert runCalls()[1][-4..-1] == ['--until', 'pre-test', '--outcome', 'passed']
        assert runCalls()[3][-2..-1] == ['--outcome', 'failed']
    }

    @Test
    void aRefusedPromotionGateRecovers() {
        cli()
        helper.registerAllowedMethod('input', [Map], { Map m -> throw new RuntimeException('Aborted by user') })
        try {
            step('blueGreenDeploy', params + [promotionGate: true, lockResource: false])
            assert false
        } catch (RuntimeException e) {
            assert e.message == 'Aborted by user'
        }
        assert stages == ['Deploy', 'Run pre-integration tests', 'Promote']
        assert runCalls().collect { phase(it) } == ['deploy', 'pre-test']
        assert argvs()[-1] == ['recover', 'books-ms']
        assert helper.callStack.find { it.methodName == 'input' }.args[0].message == 'Switch books-ms to green?'
        assert helper.callStack.find { it.methodName == 'lock' } == null
        assert argvs()[0][0] == 'run'   // without the Jenkins lock no recover first: a paused run may be live
    }

    @Test
    void theStagesAreThePhasesTheCliNamesAndANewPhaseIsResumedPlainly() {
        cli(['canary': 1], STAGES[0..1] + [[name: 'canary', title: 'Run canary']] + STAGES[2..3])
        try {
            step('blueGreenDeploy', params + [promotionGate: true])
            assert false
        } catch (PipelineError e) {
            assert e.message == 'Run canary failed'
        }
        assert stages == ['Deploy', 'Run pre-integration tests', 'Run canary']
        assert runCalls()[2] == ['run', 'books-ms', '--resume', '--proxy-url', 'http://10.100.198.201', '--until', 'canary']
        assert argvs()[-1] == ['recover', 'books-ms']
    }

    @Test
    void theGateComesBeforeTheSwitchWhereverTheCliPutsIt() {
        cli([:], [STAGES[0], STAGES[2], STAGES[1], STAGES[3]])
        assert step('blueGreenDeploy', params + [promotionGate: true]) == 'green'
        assert stages == ['Deploy', 'Promote', 'Update proxy', 'Run pre-integration tests', 'Run post-integration tests']
        assert runCalls().collect { phase(it) } == ['deploy', 'switch', 'pre-test', 'post-test']
        assert nodes == ['prod', 'prod', 'prod']
    }

    @Test
    void anAnswerWithoutStagesFailsAndRecovers() {
        cli([:], [])
        try {
            step('blueGreenDeploy', params + [lockResource: false])
            assert false
        } catch (PipelineError e) {
            assert e.message.startsWith('bluegreen run --json named no stages')
        }
        assert argvs()*.getAt(0) == ['run', 'recover']
    }

    @Test
    void aRunThatNeverStartedIsNotRecovered() {
        // e.g. the CLI refuses because another build's run is paused: recovering would undo that one
        shHandler = { Map c -> if (c.argv[0] == 'run') throw new RuntimeException('script returned exit code 1') }
        try {
            step('blueGreenDeploy', params + [lockResource: false])
            assert false
        } catch (RuntimeException e) {
            assert e.message == 'script returned exit code 1'
        }
        assert argvs()*.getAt(0) == ['run']
    }

    @Test
    void anAbortDuringTheFirstPhaseRecovers() {
        shHandler = { Map c -> if (c.argv[0] == 'run') throw new FlowInterruptedException() }
        try {
            step('blueGreenDeploy', params + [lockResource: false])
            assert false
        } catch (FlowInterruptedException e) {
            assert argvs()*.getAt(0) == ['run', 'recover']
        }
    }
}

/** What Jenkins throws when a build is aborted (matched by name, as Jenkins' own class). */
class FlowInterruptedException extends RuntimeException {
}
