package io.bluegreen

import org.junit.Test

class BluegreenCliTest extends StepTestBase {
    Object cli(Map params, List argv) {
        return binding.getVariable('bluegreenCli').call(params, argv)
    }

    @Test
    void argvTravelsAsJsonAndTheScriptIsConstant() {
        cli([:], ['color', 'next', 'x; touch /tmp/pwned', 7, null])
        assert argvs() == [['color', 'next', 'x; touch /tmp/pwned', '7', '']]
        assertShellTextIsConstant()
    }

    @Test
    void prodIpGivesTheBooksAddressesWhenNothingElseNamesThem() {
        cli([prodIp: '10.0.0.9'], ['status', 's'])
        assert calls[0].env.CONSUL_HTTP_ADDR == 'http://10.0.0.9:8500'
        assert calls[0].env.DOCKER_HOST == 'tcp://10.0.0.9:2375'
    }

    @Test
    void theConfigFileWinsOverProdIp() {
        workspace['bluegreen.toml'] = '# settings\nconsul-addr = "https://consul.prod:8501"\nimage = "x:1"\n' +
                '[table]\ndocker-host = "ignored: not top level"\n'
        cli([prodIp: '10.0.0.9'], ['status', 's'])
        assert !calls[0].env.containsKey('CONSUL_HTTP_ADDR')
        assert calls[0].env.DOCKER_HOST == 'tcp://10.0.0.9:2375'
    }

    @Test
    void theConfigFileNamedByBluegreenConfigToo() {
        env.BLUEGREEN_CONFIG = 'ops/prod.toml'
        workspace['ops/prod.toml'] = 'docker_host = "tcp://docker.prod:2376"\n'
        cli([prodIp: '10.0.0.9'], ['status', 's'])
        assert !calls[0].env.containsKey('DOCKER_HOST')
        assert calls[0].env.CONSUL_HTTP_ADDR == 'http://10.0.0.9:8500'
    }

    @Test
    void theEnvironmentWinsOverProdIp() {
        env.CONSUL_HTTP_ADDR = 'http://consul.prod:8500'
        env.BLUEGREEN_DOCKER_HOST = 'tcp://docker.prod:2375'
        cli([prodIp: '10.0.0.9'], ['status', 's'])
        assert calls[0].env.CONSUL_HTTP_ADDR == 'http://consul.prod:8500'
        assert calls[0].env.DOCKER_HOST == null
    }
}
