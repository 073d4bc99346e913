// An application release (several services in one Compose file) as one step: the CLI's
// `bluegreen app deploy` moves the changed services together; with confirm it stops before
// 100% and a Jenkins input decides: promote, or abort (see blueGreenDeployApp.txt).
def call(Map params) {
    if (params.installCli) bluegreenInstall(params)
    Map flags = [stepWait: '--step-wait', keepOld: '--keep-old', proxyUrl: '--proxy-url']
    List deploy = ['app', 'deploy', '--file', params.file, '--steps', params.steps ?: '100'] +
            bluegreenCli.flagArgs(params, flags) + (params.confirm ? ['--confirm'] : [])
    stage('Release') { bluegreenCli(params, deploy) }
    if (!params.confirm) return
    boolean promote = false
    try {
        stage('Confirm') { input(message: "Promote ${params.appName} to 100%?") }
        promote = true
    } finally {
        stage(promote ? 'Promote' : 'Abort') { bluegreenCli(params, ['app', promote ? 'promote' : 'abort', params.appName]) }
    }
}
