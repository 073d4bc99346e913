// Start the new color beside the live one, healthy and registered (see deployBG.txt).
def call(Map params) {
    stage('Deploy') {
        List argv = ['deploy', params.serviceName, '--color', params.color, '--image', params.image]
        if (params.port) argv += ['--port', params.port]
        if (params.scale) argv += ['--scale', params.scale]
        (params.containerEnv ?: [:]).each { k, v -> argv += ['--env', "${k}=${v}"] }
        bluegreenCli(params, argv)
    }
}
