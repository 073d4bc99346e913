package io.bluegreen

import org.junit.Test

class GetCurrentColorTest extends StepTestBase {
    @Test
    void readsTheColorFromTheCliWithTheBooksParameters() {
        shHandler = { Map c -> 'green\n' }
        assert step('getCurrentColor', [serviceName: 'books-ms', prodIp: '10.100.198.201']) == 'green'
        assert argvs() == [['color', 'current', 'books-ms']]
        assert calls[0].returnStdout
        assert calls[0].env.CONSUL_HTTP_ADDR == 'http://10.100.198.201:8500'
        assert calls[0].env.DOCKER_HOST == 'tcp://10.100.198.201:2375'
        assert calls[0].label == 'bluegreen color'
        assertShellTextIsConstant()
    }

    @Test
    void theBooksPositionalSignature() {
        shHandler = { Map c -> 'blue\n' }
        assert step('getCurrentColor', 'books-ms', '10.100.198.201') == 'blue'
        assert argvs() == [['color', 'current', 'books-ms']]
        assert calls[0].env.CONSUL_HTTP_ADDR == 'http://10.100.198.201:8500'
    }

    @Test
    void emptyBeforeTheFirstDeployment() {
        shHandler = { Map c -> '\n' }
        assert step('getCurrentColor', [serviceName: 'books-ms', consulAddr: 'http://consul:8500']) == ''
        assert calls[0].env.CONSUL_HTTP_ADDR == 'http://consul:8500'
        assert !calls[0].env.containsKey('DOCKER_HOST')
    }

    @Test
    void consulTokenArrivesOnlyAsAnEnvironmentVariable() {
        shHandler = { Map c -> 'blue' }
        step('getCurrentColor', [serviceName: 'books-ms', consulTokenCredentialsId: 'consul-acl'])
        assert calls[0].env.CONSUL_HTTP_TOKEN == 'secret-of-consul-acl'
        assert !calls[0].argv.any { it.contains('secret') }
        assert !calls[0].script.contains('secret')
    }
}
