package io.bluegreen

import org.junit.Test

class GetNextColorTest extends StepTestBase {
    @Test
    void fromTheCurrentColorAsTheBook() {
        shHandler = { Map c -> 'green\n' }
        assert step('getNextColor', [serviceName: 'books-ms', currentColor: 'blue']) == 'green'
        assert argvs() == [['color', 'next', 'books-ms', '--current', 'blue']]
    }

    @Test
    void firstDeploymentPassesAnEmptyCurrentColor() {
        shHandler = { Map c -> 'blue' }
        step('getNextColor', [serviceName: 'books-ms', currentColor: ''])
        assert argvs() == [['color', 'next', 'books-ms', '--current', '']]
    }

    @Test
    void withoutCurrentColorTheRegistryIsAsked() {
        shHandler = { Map c -> 'blue' }
        assert step('getNextColor', [serviceName: 'books-ms']) == 'blue'
        assert argvs() == [['color', 'next', 'books-ms']]
    }
}
