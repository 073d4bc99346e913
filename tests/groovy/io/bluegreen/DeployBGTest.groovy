package io.bluegreen

import org.junit.Test

class DeployBGTest extends StepTestBase {
    @Test
    void deploysInTheDeployStage() {
        step('deployBG', [serviceName: 'books-ms', prodIp: '10.100.198.201', color: 'green',
                          image: '10.100.198.200:5000/books-ms:42', port: 8080, scale: 2,
                          containerEnv: [DB_HOST: 'db', GREETING: 'hello world; $(id)']])
        assert stages == ['Deploy']
        assert argvs() == [['deploy', 'books-ms', '--color', 'green', '--image',
                            '10.100.198.200:5000/books-ms:42', '--port', '8080', '--scale', '2',
                            '--env', 'DB_HOST=db', '--env', 'GREETING=hello world; $(id)']]
        assert calls[0].env.DOCKER_HOST == 'tcp://10.100.198.201:2375'
        assertShellTextIsConstant()
    }

    @Test
    void theBooksPositionalSignatureTakesTheImageFromTheConfiguration() {
        step('deployBG', 'books-ms', '10.100.198.201', 'blue')
        assert stages == ['Deploy']
        assert argvs() == [['deploy', 'books-ms', '--color', 'blue']]
        assert calls[0].env.DOCKER_HOST == 'tcp://10.100.198.201:2375'
    }

    @Test
    void dockerHostWinsOverProdIpAndTlsCertsComeFromCredentials() {
        step('deployBG', [serviceName: 'books-ms', prodIp: '10.0.0.1', dockerHost: 'tcp://prod:2376',
                          dockerCertCredentialsId: 'prod-docker', color: 'blue', image: 'books-ms:1'])
        assert calls[0].env.DOCKER_HOST == 'tcp://prod:2376'
        assert calls[0].env.DOCKER_TLS_VERIFY == '1'
        assert calls[0].env.DOCKER_CERT_PATH == 'secret-of-prod-docker'
    }

    @Test
    void optionsBecomeBluegreenVariables() {
        step('deployBG', [serviceName: 'books-ms', color: 'blue', image: 'books-ms:1',
                          options: [healthPath: '/api/v1/books', publishIp: '127.0.0.1']])
        assert calls[0].env.BLUEGREEN_HEALTH_PATH == '/api/v1/books'
        assert calls[0].env.BLUEGREEN_PUBLISH_IP == '127.0.0.1'
    }

    @Test(expected = PipelineError)
    void anOptionNameThatIsNotCamelCaseIsRefused() {
        step('deployBG', [serviceName: 'books-ms', color: 'blue', image: 'x:1',
                          options: ['X=1 EVIL': 'y']])
    }
}
