// The one runner behind every bluegreen step (see bluegreenCli.txt).
// User values never become shell text: the CLI's arguments travel as a JSON list in
// $BLUEGREEN_ARGV, options as BLUEGREEN_* variables, secrets only through withCredentials.

import groovy.json.JsonOutput

def call(Map params, List argv, Map how = [:]) {
    List args = argv.collect { it == null ? '' : it.toString() }
    List envs = ["BLUEGREEN_ARGV=${JsonOutput.toJson(args)}".toString()] + environment(params)
    List creds = []
    if (params.consulTokenCredentialsId) {
        creds << string(credentialsId: params.consulTokenCredentialsId, variable: 'CONSUL_HTTP_TOKEN')
    }
    if (params.dockerCertCredentialsId) {
        creds << dockerCert(credentialsId: params.dockerCertCredentialsId, variable: 'DOCKER_CERT_PATH')
    }
    Closure run = {
        withEnv(envs) {
            sh(script: 'exec "${BLUEGREEN_CLI:-bluegreen}" --argv-json-env BLUEGREEN_ARGV',
               label: "bluegreen ${args[0]}", returnStdout: how.returnStdout ?: false,
               returnStatus: how.returnStatus ?: false)
        }
    }
    return creds ? withCredentials(creds, run) : run()
}

/** The book's parameters and the options map, as environment variables for the CLI. */
List environment(Map params) {
    List envs = []
    String dockerHost = params.dockerHost ?: (params.prodIp ? "tcp://${params.prodIp}:2375" : null)
    if (dockerHost) envs << "DOCKER_HOST=${dockerHost}".toString()
    String consul = params.consulAddr ?: (params.prodIp ? "http://${params.prodIp}:8500" : null)
    if (consul) envs << "CONSUL_HTTP_ADDR=${consul}".toString()
    if (params.dockerCertCredentialsId) envs << 'DOCKER_TLS_VERIFY=1'
    (params.options ?: [:]).each { key, value ->
        if (!(key ==~ /[a-z][A-Za-z0-9]*/)) {
            error("bluegreen: invalid option name '${key}'")
        }
        String name = key.replaceAll(/([A-Z])/, '_$1').toUpperCase()
        envs << "BLUEGREEN_${name}=${value}".toString()
    }
    return envs
}

/** CLI test options from a step's parameters (testCommand, httpPaths, expectStatus, expectBody). */
List testArgs(Map params) {
    List argv = []
    if (params.testCommand) argv += ['--cmd', params.testCommand]
    (params.httpPaths ?: []).each { argv += ['--http', it] }
    if (params.expectStatus) argv += ['--expect-status', params.expectStatus]
    if (params.expectBody) argv += ['--expect-body', params.expectBody]
    return argv
}

/** Run the user's test closure with DOMAIN set; true when it passed. An abort is rethrown. */
boolean closurePassed(Closure tests, String domain) {
    try {
        withEnv(["DOMAIN=${domain}".toString()]) { tests() }
        return true
    } catch (e) {
        if (e.getClass().name.endsWith('FlowInterruptedException')) {
            throw e
        }
        echo "bluegreen: tests failed: ${e.message}"
        return false
    }
}

/** Test arguments for a step: a closure's outcome, else the CLI's own tests. */
List tests(Map params, String domain) {
    if (params.tests instanceof Closure) {
        return ['--outcome', closurePassed(params.tests, domain) ? 'passed' : 'failed']
    }
    return testArgs(params)
}
