// An application release (several services in one Compose file) as one step, one Jenkins stage
// per phase of ONE `bluegreen app deploy`. The phases are the CLI's (`app check --json` names
// them; they are declared once, in Python): the first stage runs `app deploy --until PHASE`,
// each next one `app resume APP --until PHASE` (after the last phase: the promotion).
// With confirm the release stops before 100% at the switch: a 'Confirm' input, then the same
// phase again. An error or abort while the release is paused ends in `app abort`. The gates
// (maxErrorRate, ...) go to every call: a step's gate runs in whichever call reaches it.
def call(Map params) {
    if (params.installCli) bluegreenInstall(params)
    Map file = bluegreenCli.json(params, ['app', 'check', '--file', params.file])
    List first = ['app', 'deploy', '--file', params.file, '--steps', params.steps ?: '100'] + (params.confirm ? ['--confirm'] : []) + (params.sticky ? ['--sticky'] : [])
    List options = bluegreenCli.flagArgs(params, [stepWait: '--step-wait', keepOld: '--keep-old', proxyUrl: '--proxy-url']) + bluegreenCli.gateArgs(params)
    Map done = [:]
    try {
        for (int i = 0; i < file.phases.size() && done.result != 'unchanged'; i += done.gate ? 0 : 1) {
            if (done.gate) stage('Confirm') { input(message: "Promote ${file.name} to 100%?") }
            stage(file.phases[i]) { done = bluegreenCli.json(params, (done ? ['app', 'resume', file.name] : first) + options + ['--until', file.phases[i]]) }
        }
    } catch (e) {
        if (done.result == 'paused') stage('Abort') { bluegreenCli(params, ['app', 'abort', file.name], [returnStatus: true]) }
        throw e
    }
}
