package io.bluegreen

import groovy.json.JsonSlurper
import org.junit.After
import org.junit.Test

/**
 * blueGreenDeploy under JenkinsPipelineUnit (plain and CPS) with its sh calls really run: the
 * Python CLI (`bluegreen run --until/--resume`) against the real Docker engine, Consul agent and
 * nginx of the sandbox that scripts/test-groovy.sh started ($BLUEGREEN_SANDBOX_ENV). Two
 * deployments: blue, then green; the history is the one the CLI's run recorded.
 */
class BlueGreenDeployEndToEndTest extends StepTestBase {
    Map sandbox = new JsonSlurper().parse(new File(requireEnv('BLUEGREEN_SANDBOX_ENV')))
    String service = "groovy-e2e-${System.nanoTime() % 1000000}"

    static String requireEnv(String name) {
        String value = System.getenv(name)
        assert value: "\$${name} is not set: run scripts/test-groovy.sh (it starts the sandbox)"
        return value
    }

    String proxyGet() {
        HttpURLConnection c = new URL("${sandbox.BLUEGREEN_PROXY_URL}/api/v1/books").openConnection()
        return c.responseCode == 200 ? c.inputStream.text : "HTTP ${c.responseCode}"
    }

    /** Both modes share the sandbox's nginx: take this run's service out of it again. */
    @After
    void removeRoute() {
        ['BLUEGREEN_UPSTREAM_DIR', 'BLUEGREEN_INCLUDE_DIR'].each { dir ->
            new File("${sandbox[dir]}/${service}.conf").delete()
        }
        long pid = new File(sandbox.BLUEGREEN_NGINX_PID_FILE as String).text.trim() as long
        ['kill', '-HUP', "${pid}"].execute().waitFor()
        long deadline = System.currentTimeMillis() + 30000
        while (proxyGet() != 'HTTP 404') {
            assert System.currentTimeMillis() < deadline: 'nginx still routes to the removed service'
            Thread.sleep(50)
        }
    }

    @Test
    void twoConsecutiveDeployments() {
        shHandler = { Map c ->
            ProcessBuilder pb = new ProcessBuilder('bash', '-c', c.script)
            pb.environment().putAll(sandbox)
            pb.environment().putAll(c.env)
            pb.environment().BLUEGREEN_CLI = requireEnv('BLUEGREEN_CLI')
            pb.redirectError(ProcessBuilder.Redirect.INHERIT)
            Process p = pb.start()
            String out = p.inputStream.text
            int status = p.waitFor()
            if (c.returnStatus) return status
            if (status != 0) throw new PipelineError("script returned exit code ${status}")
            return c.returnStdout ? out : null
        }
        Map params = [serviceName: service, proxyUrl: sandbox.BLUEGREEN_PROXY_URL,
                      httpPaths: ['/api/v1/books'], lockResource: false]

        assert proxyGet() == 'HTTP 404'
        assert step('blueGreenDeploy', params + [image: 'bluegreen-sample:v1']) == 'blue'
        assert proxyGet().contains('"version":"v1"')
        // the stages are the phases the CLI names, titled as the book's stages
        assert stages == ['Deploy', 'Run pre-integration tests', 'Update proxy', 'Run post-integration tests']

        assert step('blueGreenDeploy', params + [image: 'bluegreen-sample:v2', expectBody: 'v2']) == 'green'
        assert proxyGet().contains('"version":"v2"')

        assert step('getCurrentColor', [serviceName: service]) == 'green'
        List history = new JsonSlurper().parseText(
                binding.getVariable('bluegreenCli').call([:], ['history', service, '--json'], [returnStdout: true]))
        assert history.collect { [it.from, it.to, it.result] } == [[null, 'blue', 'ok'], ['blue', 'green', 'ok']]
    }
}
