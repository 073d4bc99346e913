// Route the proxy to a color and record it, on proxyNode when given (see updateBGProxy.txt).
def call(Map params) {
    stage('Update proxy') {
        Closure update = { bluegreenCli(params, ['switch', params.serviceName, '--color', params.color]) }
        params.proxyNode ? node(params.proxyNode, update) : update()
    }
}
