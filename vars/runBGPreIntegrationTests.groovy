// Test the new color directly; on failure stop it and fail the build (see runBGPreIntegrationTests.txt).
def call(Map params) {
    stage('Run pre-integration tests') {
        String address = bluegreenCli(params, ['address', params.serviceName, '--color', params.color],
                                      [returnStdout: true]).trim().split('\n')[0]
        List argv = ['pre-test', params.serviceName, '--color', params.color]
        if (bluegreenCli(params, argv + bluegreenCli.tests(params, "http://${address}"), [returnStatus: true]) != 0) {
            error('Pre-integration tests failed')
        }
    }
}

/** The book's runBGPreIntegrationTests(serviceName, prodIp, color): tests from the configuration. */
def call(String serviceName, String prodIp, String color) {
    call([serviceName: serviceName, prodIp: prodIp, color: color])
}
