// Start the new color beside the live one, healthy and registered (see deployBG.txt).
def call(Map params) {
    stage('Deploy') {
        List argv = ['deploy', params.serviceName, '--color', params.color]
        if (params.image) argv += ['--image', params.image]
        if (params.port) argv += ['--port', params.port]
        if (params.scale) argv += ['--scale', params.scale]
        argv += bluegreenCli.containerEnvArgs(params.containerEnv ?: [:])
        bluegreenCli(params, argv)
    }
}

/** The book's deployBG(serviceName, prodIp, color): the image comes from the configuration. */
def call(String serviceName, String prodIp, String color) {
    call([serviceName: serviceName, prodIp: prodIp, color: color])
}
