package io.bluegreen

import org.junit.Test

class BluegreenCliTest extends StepTestBase {
    @Test
    void argvTravelsAsJsonAndTheScriptIsConstant() {
        binding.getVariable('bluegreenCli').call([:], ['color', 'next', 'x; touch /tmp/pwned', 7, null])
        assert argvs() == [['color', 'next', 'x; touch /tmp/pwned', '7', '']]
        assertShellTextIsConstant()
    }
}
