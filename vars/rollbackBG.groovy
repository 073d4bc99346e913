// Route back to the previous color, starting it first when it was stopped (see rollbackBG.txt).
def call(Map params) {
    stage('Rollback') {
        List argv = ['rollback', params.serviceName, '--lock-wait', params.lockWait ?: 0]
        if (params.stopCurrent) argv << '--stop'
        Closure rollback = { bluegreenCli(params, argv) }
        params.proxyNode ? node(params.proxyNode, rollback) : rollback()
    }
}
