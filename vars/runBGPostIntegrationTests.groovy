// Test through the proxy; on failure route back to currentColor, stop nextColor and fail the
// build, else stop currentColor (see runBGPostIntegrationTests.txt).
def call(Map params) {
    stage('Run post-integration tests') {
        String proxy = params.proxyUrl ?: "http://${params.proxyIp}"
        List argv = ['post-test', params.serviceName, '--current', params.currentColor ?: '',
                     '--next', params.nextColor, '--proxy-url', proxy, '--keep-old', params.keepOld ?: 0]
        Closure post = { bluegreenCli(params, argv + bluegreenCli.tests(params, proxy), [returnStatus: true]) }
        if ((params.proxyNode ? node(params.proxyNode, post) : post()) != 0) {
            error('Post-integration tests failed')
        }
    }
}
