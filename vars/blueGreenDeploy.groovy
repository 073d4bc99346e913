// The book's Jenkinsfile as one step: build and test closures, then the blue-green stages with
// the book's failure semantics, an optional promotion gate, the deploy lock and history
// (see blueGreenDeploy.txt). Returns the color now live.
def call(Map params) {
    if (params.installCli) bluegreenInstall(params)
    if (params.build) stage('Build') { params.build() }
    if (params.test) stage('Test') { params.test() }
    Closure flow = {
        bluegreenCli(params, ['recover', params.serviceName])
        String current = getCurrentColor(params)
        String next = getNextColor(params + [currentColor: current])
        Map p = params + [color: next, currentColor: current, nextColor: next]
        List history = ['record', params.serviceName, '--image', params.image, '--from', current,
                        '--to', next, '--start', "${System.currentTimeMillis() / 1000}"]
        String phase = 'deploy'
        try {
            deployBG(p)
            phase = 'pre-test'
            runBGPreIntegrationTests(p + [tests: params.preTests ?: params.tests])
            phase = 'gate'
            if (params.promotionGate) {
                stage('Promote') { input(message: "Switch ${params.serviceName} to ${next}?") }
            }
            phase = 'switch'
            updateBGProxy(p)
            phase = 'post-test'
            runBGPostIntegrationTests(p + [tests: params.postTests ?: params.tests])
        } catch (e) {
            if (phase in ['gate', 'switch']) stopBG(p + [force: false])
            bluegreenCli(params, history + ['--result', 'failed', '--failed-phase', phase])
            throw e
        }
        bluegreenCli(params, history + ['--result', 'ok'])
        return next
    }
    if (params.lockResource == false) return flow()
    return lock(resource: params.lockResource ?: "bluegreen-${params.serviceName}", flow)
}
