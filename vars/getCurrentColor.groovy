// The color live for serviceName, '' before the first deployment (see getCurrentColor.txt).
def call(Map params) {
    return bluegreenCli(params, ['color', 'current', params.serviceName], [returnStdout: true]).trim()
}

/** The book's getCurrentColor(serviceName, prodIp). */
def call(String serviceName, String prodIp) {
    return call([serviceName: serviceName, prodIp: prodIp])
}
