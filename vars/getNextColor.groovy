// The color to deploy next: green after blue, otherwise blue (see getNextColor.txt).
def call(Map params) {
    List argv = ['color', 'next', params.serviceName]
    if (params.containsKey('currentColor')) {
        argv += ['--current', params.currentColor ?: '']
    }
    return bluegreenCli(params, argv, [returnStdout: true]).trim()
}
