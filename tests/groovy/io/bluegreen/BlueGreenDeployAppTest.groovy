package io.bluegreen

import groovy.json.JsonOutput
import org.junit.Test

/** blueGreenDeployApp: one stage per phase of one `app deploy`, the phases as the CLI names them
 * (the CLI's answers are mocked). */
class BlueGreenDeployAppTest extends StepTestBase {
    Map params = [file: 'compose.yaml', steps: '10,50,100']
    static final List PHASES = ['deploy', 'pre-test', 'switch', 'post-test']

    /** The CLI: `app check` names the phases; each `app deploy|resume --until P` pauses after P
     * (after the last: live); with --confirm the first switch stops at the gate at 50%; a phase
     * in failing exits 1 (sh throws, as Jenkins' sh does). */
    void cli(Map how = [:]) {
        List phases = how.phases ?: PHASES
        boolean gate = false
        shHandler = { Map c ->
            List a = c.argv
            if (a[1] == 'check') return JsonOutput.toJson([valid: true, name: 'hello-world', phases: phases])
            if (a[1] == 'abort') return how.abortStatus ?: 0
            String until = a[a.indexOf('--until') + 1]
            if (until in (how.failing ?: [])) throw new PipelineError('script returned exit code 1')
            if (how.unchanged) return JsonOutput.toJson([result: 'unchanged', app: 'hello-world'])
            if (a.contains('--confirm')) gate = true
            if (gate && until == 'switch' && a[1] == 'resume' && !how.gateSeen) {
                how.gateSeen = true
                return JsonOutput.toJson([result: 'paused', paused_after: 'switch', weight: 50, gate: true])
            }
            if (until == phases[-1]) return JsonOutput.toJson([result: 'ok', release: 2])
            return JsonOutput.toJson([result: 'paused', paused_after: until, weight: 0, gate: false])
        }
    }

    List release(String verb, String phase) {
        List head = verb == 'deploy' ? ['app', 'deploy', '--file', 'compose.yaml', '--steps', '10,50,100'] :
                ['app', 'resume', 'hello-world']
        return head + ['--until', phase, '--json']
    }

    @Test
    void oneStagePerPhaseOfOneRelease() {
        cli()
        step('blueGreenDeployApp', params)
        assert stages == PHASES
        assert argvs() == [['app', 'check', '--file', 'compose.yaml', '--json'],
                           release('deploy', 'deploy'), release('resume', 'pre-test'),
                           release('resume', 'switch'), release('resume', 'post-test')]
        assert calls.every { it.returnStdout }   // each answer is read: a non-zero exit fails the build
        assertShellTextIsConstant()
    }

    @Test
    void theStagesAreThePhasesTheCliNames() {
        cli(phases: ['deploy', 'check', 'finish'])
        step('blueGreenDeployApp', params)
        assert stages == ['deploy', 'check', 'finish']
        assert argvs()[1..-1].collect { it[it.indexOf('--until') + 1] } == ['deploy', 'check', 'finish']
    }

    @Test
    void optionsGoToEveryCall() {
        cli()
        step('blueGreenDeployApp', params + [stepWait: 5, keepOld: 60, proxyUrl: 'http://10.0.0.1'])
        List options = ['--step-wait', '5', '--keep-old', '60', '--proxy-url', 'http://10.0.0.1']
        assert argvs()[1..-1].every { Collections.indexOfSubList(it, options) > 0 }
    }

    @Test
    void gatesGoToEveryCallStickyToTheFirst() {
        cli()
        step('blueGreenDeployApp', params + [stepWait: 30, sticky: true, maxErrorRate: 1, maxLatencyRatio: 1.5,
                                             minRequests: 100, minRequestsWait: 60, gateQuery: 'up == 1',
                                             prometheusUrl: 'http://prom:9090'])
        List gates = ['--step-wait', '30', '--max-error-rate', '1', '--max-latency-ratio', '1.5',
                      '--min-requests', '100', '--min-requests-wait', '60', '--gate-query', 'up == 1',
                      '--prometheus-url', 'http://prom:9090']
        assert argvs()[1..-1].every { Collections.indexOfSubList(it, gates) > 0 }
        assert argvs()[1][0..6] == ['app', 'deploy', '--file', 'compose.yaml', '--steps', '10,50,100', '--sticky']
        assert argvs()[2..-1].every { !it.contains('--sticky') }
        assertShellTextIsConstant()
    }

    @Test
    void thePreviewSecretIsACredentialNeverAnArgument() {
        cli()
        step('blueGreenDeployApp', params + [previewSecretCredentialsId: 'preview'])
        assert calls.every { it.env.BLUEGREEN_PREVIEW_SECRET == 'secret-of-preview' }
        assert !argvs().flatten().any { it.toString().contains('preview') }
    }

    @Test
    void confirmStopsAtTheGateThenTheSwitchGoesOn() {
        cli()
        step('blueGreenDeployApp', params + [confirm: true])
        assert stages == ['deploy', 'pre-test', 'switch', 'Confirm', 'switch', 'post-test']
        assert argvs()[1] == ['app', 'deploy', '--file', 'compose.yaml', '--steps', '10,50,100', '--confirm',
                              '--until', 'deploy', '--json']
        assert argvs()[-3..-1] == [release('resume', 'switch'), release('resume', 'switch'),
                                   release('resume', 'post-test')]
        assert helper.callStack.find { it.methodName == 'input' }.args[0] == [message: 'Promote hello-world to 100%?']
    }

    @Test
    void rejectedInputAborts() {
        cli()
        helper.registerAllowedMethod('input', [Map], { Map m -> throw new PipelineError('Aborted by user') })
        try {
            step('blueGreenDeployApp', params + [confirm: true])
            assert false: 'the rejected input must fail the build'
        } catch (PipelineError e) {
            assert e.message == 'Aborted by user'
        }
        assert stages == ['deploy', 'pre-test', 'switch', 'Confirm', 'Abort']
        assert argvs()[-1] == ['app', 'abort', 'hello-world']
    }

    @Test
    void aFailedPhaseFailsTheBuildAndAbortsWhatIsPaused() {
        cli(failing: ['switch'], abortStatus: 1)   // the CLI undid it already: abort finds nothing
        try {
            step('blueGreenDeployApp', params)
            assert false: 'a failed phase must fail the build'
        } catch (PipelineError e) {
            assert e.message == 'script returned exit code 1'
        }
        assert stages == ['deploy', 'pre-test', 'switch', 'Abort']
        assert argvs()[-1] == ['app', 'abort', 'hello-world']
        assert calls[-1].returnStatus   // a failing abort does not hide the phase's failure
    }

    @Test
    void aFirstDeployThatFailsHasNothingToAbort() {
        cli(failing: ['deploy'])
        try {
            step('blueGreenDeployApp', params)
            assert false
        } catch (PipelineError e) {
            assert e.message == 'script returned exit code 1'
        }
        assert stages == ['deploy']
    }

    @Test
    void nothingChangedEndsAfterTheFirstStage() {
        cli(unchanged: true)
        step('blueGreenDeployApp', params)
        assert stages == ['deploy']
        assert argvs().size() == 2
    }
}
