// Deregister and stop a color's containers; they are kept for rollback (see stopBG.txt).
def call(Map params) {
    List argv = ['stop', params.serviceName, '--color', params.color]
    if (params.force) argv << '--force'
    bluegreenCli(params, argv)
}

/** The book's stopBG(serviceName, prodIp, color). */
def call(String serviceName, String prodIp, String color) {
    call([serviceName: serviceName, prodIp: prodIp, color: color])
}
