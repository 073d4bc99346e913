// The book's Jenkinsfile as one step. The blue-green stages drive the ONE Python pipeline,
// `bluegreen run` (its deploy lock, inflight record, failure rules and history), one phase per
// stage: `run --until deploy --json`, then `run --resume` for each next phase. The phases and
// their stage titles are the CLI's (that first answer's `stages`; declared once, in Python);
// what a phase needs here (tests, the gate, the proxy node) is keyed by its name. Between
// stages the run is paused, so tests run in Jenkins and an input gate can wait. Any error or
// abort after the run started ends in `bluegreen recover`. Returns the color now live.

import groovy.json.JsonSlurperClassic

def call(Map params) {
    if (params.installCli) bluegreenInstall(params)
    if (params.build) stage('Build') { params.build() }
    if (params.test) stage('Test') { params.test() }
    Closure flow = { blueGreenStages(params) }
    if (params.lockResource == false) return flow()
    return lock(resource: params.lockResource ?: "bluegreen-${params.serviceName}", flow)
}

/** Deploy, then each next phase the CLI names ([Promote] before the switch): one paused-and-resumed run. */
String blueGreenStages(Map params) {
    String service = params.serviceName
    if (params.lockResource != false) {
        // Under the Jenkins lock no other build is between stages: a paused run is a dead build's.
        onProxyNode(params) { bluegreenCli(params, ['recover', service]) }
    }
    Map run = null
    try {
        stage('Deploy') {
            run = summary(bluegreenCli(params, firstCall(params), [returnStdout: true]))
        }
        if (!run.stages) error('bluegreen run --json named no stages: the CLI is older than this library')
        for (int i = 1; i < run.stages.size(); i++) {
            if (run.stages[i].name == 'switch' && params.promotionGate) {
                stage('Promote') { input(message: "Switch ${service} to ${run.to}?") }
            }
            stage(run.stages[i].title) { resumePhase(params, run.stages[i], run.to, i == run.stages.size() - 1) }
        }
        return run.to
    } catch (e) {
        if (run != null || bluegreenCli.aborted(e)) {
            echo "bluegreen: ${e.message ?: e.getClass().name}: recovering ${service}"
            onProxyNode(params) { bluegreenCli(params, ['recover', service], [returnStatus: true]) }
        }
        throw e
    }
}

/** `bluegreen run` up to the deploy phase, with the image and the container settings. */
List firstCall(Map params) {
    List argv = ['run', params.serviceName, '--until', 'deploy', '--json'] + runOptions(params)
    if (params.steps) argv += ['--steps', params.steps]
    if (params.sticky) argv += ['--sticky']
    if (params.image) argv += ['--image', params.image]
    if (params.port) argv += ['--port', params.port]
    if (params.scale) argv += ['--scale', params.scale]
    return argv + bluegreenCli.containerEnvArgs(params.containerEnv ?: [:])
}

/** Resume the paused run with the phase next ([name, title]); the last one goes on to the end. */
void resumePhase(Map params, Map next, String color, boolean last) {
    List until = last ? [] : ['--until', next.name]
    if (next.name == 'pre-test') {
        resume(params, until + preTests(params, color), 'Pre-integration tests failed')
    } else if (next.name == 'switch') {
        onProxyNode(params) { resume(params, until, 'Updating the proxy failed') }
    } else if (next.name == 'post-test') {
        Map p = params + [tests: params.postTests ?: params.tests]
        List tests = bluegreenCli.tests(p, proxyUrl(params) ?: 'http://127.0.0.1')  // a closure runs here
        onProxyNode(params) { resume(params, until + tests, 'Post-integration tests failed') }
    } else {
        resume(params, until, "${next.title} failed")
    }
}

/** Continue the paused run with its next phase; a non-zero exit fails the build with message. */
void resume(Map params, List args, String message) {
    List argv = ['run', params.serviceName, '--resume'] + runOptions(params) + args
    if (bluegreenCli(params, argv, [returnStatus: true]) != 0) error(message)
}

List runOptions(Map params) {
    List argv = proxyUrl(params) ? ['--proxy-url', proxyUrl(params)] : []
    if (params.keepOld != null) argv += ['--keep-old', params.keepOld]
    if (params.stepWait != null) argv += ['--step-wait', params.stepWait]
    return argv + bluegreenCli.gateArgs(params)
}

/** Test arguments of the pre-tests; a closure runs here with DOMAIN=http://<new color>. */
List preTests(Map params, String color) {
    Map p = params + [tests: params.preTests ?: params.tests]
    if (!(p.tests instanceof Closure)) return bluegreenCli.testArgs(p)
    String address = bluegreenCli(params, ['address', params.serviceName, '--color', color],
                                  [returnStdout: true]).trim().split('\n')[0]
    return bluegreenCli.tests(p, "http://${address}")
}

String proxyUrl(Map params) {
    return params.proxyUrl ?: (params.proxyIp ? "http://${params.proxyIp}" : null)
}

def onProxyNode(Map params, Closure body) {
    return params.proxyNode ? node(params.proxyNode, body) : body()
}

/** The run's JSON summary after a paused phase: from ('' on a first deployment), to, and the
 * stages: every phase as [name, title], in order. */
@NonCPS
Map summary(String json) {
    Map parsed = new JsonSlurperClassic().parseText(json) as Map
    return [from: (parsed.from ?: '').toString(), to: parsed.to.toString(), pausedAfter: parsed.paused_after,
            stages: parsed.stages]
}
