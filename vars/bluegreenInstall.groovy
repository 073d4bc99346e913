// Install the bluegreen CLI of this very library version into a workspace virtualenv, unless it is
// there already; sets BLUEGREEN_CLI (see bluegreenInstall.txt).
def call(Map params = [:]) {
    String venv = params.venv ?: "${env.WORKSPACE}/.bluegreen-venv"
    String spec = params.pipSpec ?: env.BLUEGREEN_PIP_SPEC
    if (!spec) {  // the CLI's source archive shipped in this library's resources
        spec = "${venv}.cli.tar.gz"
        writeFile(file: spec, encoding: 'Base64',
                  text: libraryResource(resource: 'bluegreen/bluegreen-cli.tar.gz', encoding: 'Base64'))
    }
    withEnv(["BLUEGREEN_VENV=${venv}".toString(), "BLUEGREEN_PIP_SPEC=${spec}".toString()]) {
        sh(script: libraryResource('bluegreen/install-cli.sh'), label: 'install the bluegreen CLI')
    }
    env.BLUEGREEN_CLI = "${venv}/bin/bluegreen".toString()
    return env.BLUEGREEN_CLI
}
