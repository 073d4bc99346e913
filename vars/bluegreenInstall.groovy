// Install the bluegreen CLI into a workspace virtualenv when missing; sets BLUEGREEN_CLI
// (see bluegreenInstall.txt).
def call(Map params = [:]) {
    String venv = params.venv ?: "${env.WORKSPACE}/.bluegreen-venv"
    String spec = params.pipSpec ?: env.BLUEGREEN_PIP_SPEC ?: 'bluegreen==0.1.0'
    withEnv(["BLUEGREEN_VENV=${venv}".toString(), "BLUEGREEN_PIP_SPEC=${spec}".toString()]) {
        sh(script: libraryResource('bluegreen/install-cli.sh'), label: 'install the bluegreen CLI')
    }
    env.BLUEGREEN_CLI = "${venv}/bin/bluegreen".toString()
    return env.BLUEGREEN_CLI
}
