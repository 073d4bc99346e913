// Test through the proxy; on failure route back to currentColor, stop nextColor and fail the
// build, else stop currentColor (see runBGPostIntegrationTests.txt).
def call(Map params) {
    stage('Run post-integration tests') {
        String proxy = params.proxyUrl ?: (params.proxyIp ? "http://${params.proxyIp}" : null)
        List argv = ['post-test', params.serviceName, '--current', params.currentColor ?: '', '--next', params.nextColor]
        if (proxy) argv += ['--proxy-url', proxy]
        if (params.keepOld != null) argv += ['--keep-old', params.keepOld]
        argv += bluegreenCli.tests(params, proxy)  // a closure runs here, in the workspace
        Closure post = { bluegreenCli(params, argv, [returnStatus: true]) }
        if ((params.proxyNode ? node(params.proxyNode, post) : post()) != 0) error('Post-integration tests failed')
    }
}

/** The book's runBGPostIntegrationTests(serviceName, prodIp, proxyIp, proxyNode, currentColor, nextColor). */
def call(String serviceName, String prodIp, String proxyIp, String proxyNode, String currentColor, String nextColor) {
    call([serviceName: serviceName, prodIp: prodIp, proxyIp: proxyIp, proxyNode: proxyNode,
          currentColor: currentColor, nextColor: nextColor])
}
