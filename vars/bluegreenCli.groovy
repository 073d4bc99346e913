// The one runner behind every bluegreen step (see bluegreenCli.txt).
// User values never become shell text: the CLI's arguments travel as a JSON list in
// $BLUEGREEN_ARGV, options as BLUEGREEN_* variables, secrets only through withCredentials.
// CPS-safe: no closure is handed to a collection method; pure helpers are @NonCPS.

import groovy.json.JsonOutput
import groovy.json.JsonSlurperClassic

def call(Map params, List argv, Map how = [:]) {
    List args = strings(argv)
    List envs = ["BLUEGREEN_ARGV=${JsonOutput.toJson(args)}".toString()] + environment(params)
    List creds = []
    if (params.consulTokenCredentialsId) {
        creds << string(credentialsId: params.consulTokenCredentialsId, variable: 'CONSUL_HTTP_TOKEN')
    }
    if (params.dockerCertCredentialsId) {
        creds << dockerCert(credentialsId: params.dockerCertCredentialsId, variable: 'DOCKER_CERT_PATH')
    }
    if (params.previewSecretCredentialsId) {
        creds << string(credentialsId: params.previewSecretCredentialsId, variable: 'BLUEGREEN_PREVIEW_SECRET')
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

/** The CLI's answer to argv with --json, parsed (a non-zero exit fails the build). */
Map json(Map params, List argv) {
    return parsed(call(params, argv + ['--json'], [returnStdout: true]))
}

@NonCPS
Map parsed(String text) {
    return new JsonSlurperClassic().parseText(text) as Map
}

/**
 * The book's parameters and the options map, as environment variables for the CLI.
 * prodIp means Docker at tcp://<prodIp>:2375 and Consul at http://<prodIp>:8500, as in the
 * book, unless dockerHost/consulAddr are given or the configuration already names them.
 */
List environment(Map params) {
    Map options = params.options ?: [:]
    String bad = badOptionName(options)
    if (bad != null) {
        error("bluegreen: invalid option name '${bad}'")
    }
    List envs = []
    String dockerHost = params.dockerHost
    String consul = params.consulAddr
    if (params.prodIp && !(dockerHost && consul)) {
        String toml = configText()
        if (!dockerHost && !configured(toml, 'docker-host', ['BLUEGREEN_DOCKER_HOST', 'DOCKER_HOST'])) {
            dockerHost = "tcp://${params.prodIp}:2375"
        }
        if (!consul && !configured(toml, 'consul-addr', ['BLUEGREEN_CONSUL_ADDR', 'CONSUL_HTTP_ADDR'])) {
            consul = "http://${params.prodIp}:8500"
        }
    }
    if (dockerHost) envs << "DOCKER_HOST=${dockerHost}".toString()
    if (consul) envs << "CONSUL_HTTP_ADDR=${consul}".toString()
    if (params.dockerCertCredentialsId) envs << 'DOCKER_TLS_VERIFY=1'
    return envs + optionVariables(options)
}

/** The CLI's configuration file as it will read it ($BLUEGREEN_CONFIG, else ./bluegreen.toml), or ''. */
String configText() {
    String path = env.BLUEGREEN_CONFIG ?: 'bluegreen.toml'
    return fileExists(path) ? readFile(path) : ''
}

/** Whether the environment or the config file's top level already sets this option. */
boolean configured(String toml, String key, List vars) {
    for (String name : vars) {
        if (env[name]) return true
    }
    return topLevelKeys(toml).contains(key.replace('-', '_'))
}

@NonCPS
Set topLevelKeys(String toml) {
    Set keys = []
    for (String line : toml.readLines()) {
        String text = line.trim()
        if (text.startsWith('[')) break
        def m = text =~ /^"?([A-Za-z0-9_-]+)"?\s*=/
        if (m.find()) keys << m.group(1).replace('-', '_')
    }
    return keys
}

@NonCPS
String badOptionName(Map options) {
    return options.keySet().find { !(it ==~ /[a-z][A-Za-z0-9]*/) }
}

@NonCPS
List optionVariables(Map options) {
    return options.collect { key, value -> "BLUEGREEN_${key.replaceAll(/([A-Z])/, '_$1').toUpperCase()}=${value}".toString() }
}

@NonCPS
List strings(List argv) {
    return argv.collect { it == null ? '' : it.toString() }
}

/** CLI test options from a step's parameters (testCommand, httpPaths, expectStatus, expectBody). */
@NonCPS
List testArgs(Map params) {
    List argv = []
    if (params.testCommand) argv += ['--cmd', params.testCommand]
    for (path in (params.httpPaths ?: [])) argv += ['--http', path]
    if (params.expectStatus) argv += ['--expect-status', params.expectStatus]
    if (params.expectBody) argv += ['--expect-body', params.expectBody]
    return argv
}

/** --env K=V for each container variable (a loop over a Map's entries cannot be CPS: not serializable). */
@NonCPS
List containerEnvArgs(Map containerEnv) {
    return containerEnv.collectMany { key, value -> ['--env', "${key}=${value}".toString()] }
}

/** Run the user's test closure with DOMAIN set; true when it passed. An abort is rethrown. */
boolean closurePassed(Closure tests, String domain) {
    try {
        withEnv(["DOMAIN=${domain}".toString()]) { tests() }
        return true
    } catch (e) {
        if (aborted(e)) {
            throw e
        }
        echo "bluegreen: tests failed: ${e.message}"
        return false
    }
}

/** A Jenkins abort (the build's stop button, a timeout, a rejected input), not a failure. */
@NonCPS
boolean aborted(Throwable e) {
    return e.getClass().name.endsWith('FlowInterruptedException')
}

/** Test arguments for a step: a closure's outcome, else the CLI's own tests (or the configuration's). */
List tests(Map params, String domain) {
    if (params.tests instanceof Closure) {
        return ['--outcome', closurePassed(params.tests, domain) ? 'passed' : 'failed']
    }
    return testArgs(params)
}

/** The gates of a release's steps (each call that may run a step takes them). */
@NonCPS
List gateArgs(Map params) {
    return flagArgs(params, [maxErrorRate: '--max-error-rate', maxLatencyRatio: '--max-latency-ratio',
                             minRequests: '--min-requests', minRequestsWait: '--min-requests-wait',
                             gateQuery: '--gate-query', prometheusUrl: '--prometheus-url'])
}

/** ['--flag', value] for each parameter that is set, in the order of ``flags``. */
@NonCPS
List flagArgs(Map params, Map flags) {
    return flags.findAll { key, flag -> params[key] != null }.collectMany { key, flag -> [flag, params[key].toString()] }
}
