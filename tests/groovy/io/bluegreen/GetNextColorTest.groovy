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
    void theBooksPositionalSignatureAsksNoRegistry() {
        shHandler = { Map c -> 'green\n' }
        assert step('getNextColor', 'blue') == 'green'
        assert argvs() == [['color', 'next', '--current', 'blue']]
    }

    @Test
    void firstDeploymentPassesAnEmptyCurrentColor() {
        shHandler = { Map c -> 'blue' }
        step('getNextColor', [serviceName: 'books-ms', currentColor: ''])
        step('getNextColor', '')
        assert argvs() == [['color', 'next', 'books-ms', '--current', ''], ['color', 'next', '--current', '']]
    }

    @Test
    void withoutCurrentColorTheRegistryIsAsked() {
        shHandler = { Map c -> 'blue' }
        assert step('getNextColor', [serviceName: 'books-ms']) == 'blue'
        assert argvs() == [['color', 'next', 'books-ms']]
    }
}
