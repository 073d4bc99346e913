// Route the proxy to a color and record it, on proxyNode when given (see updateBGProxy.txt).
def call(Map params) {
    stage('Update proxy') {
        Closure update = { bluegreenCli(params, ['switch', params.serviceName, '--color', params.color]) }
        params.proxyNode ? node(params.proxyNode, update) : update()
    }
}

/** The book's updateBGProxy(serviceName, proxyNode, color): proxy settings from the configuration. */
def call(String serviceName, String proxyNode, String color) {
    call([serviceName: serviceName, proxyNode: proxyNode, color: color])
}
