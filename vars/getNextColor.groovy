// The color to deploy next: green after blue, otherwise blue (see getNextColor.txt).
def call(Map params) {
    List argv = params.serviceName ? ['color', 'next', params.serviceName] : ['color', 'next']
    if (params.containsKey('currentColor')) {
        argv += ['--current', params.currentColor ?: '']
    }
    return bluegreenCli(params, argv, [returnStdout: true]).trim()
}

/** The book's getNextColor(currentColor): the registry is not asked. */
def call(String currentColor) {
    return call([currentColor: currentColor])
}
