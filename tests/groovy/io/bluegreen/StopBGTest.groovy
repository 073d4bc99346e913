package io.bluegreen

import org.junit.Test

class StopBGTest extends StepTestBase {
    @Test
    void stopsAColor() {
        step('stopBG', [serviceName: 'books-ms', prodIp: '10.100.198.201', color: 'blue'])
        assert argvs() == [['stop', 'books-ms', '--color', 'blue']]
        assert calls[0].env.DOCKER_HOST == 'tcp://10.100.198.201:2375'
    }

    @Test
    void theBooksPositionalSignature() {
        step('stopBG', 'books-ms', '10.100.198.201', 'green')
        assert argvs() == [['stop', 'books-ms', '--color', 'green']]
        assert calls[0].env.DOCKER_HOST == 'tcp://10.100.198.201:2375'
    }

    @Test
    void force() {
        step('stopBG', [serviceName: 'books-ms', color: 'blue', force: true])
        assert argvs() == [['stop', 'books-ms', '--color', 'blue', '--force']]
    }
}
