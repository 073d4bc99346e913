package io.bluegreen

import org.junit.Test

class BluegreenInstallTest extends StepTestBase {
    @Test
    void installsIntoTheWorkspaceVenvAndSetsTheCli() {
        String cli = step('bluegreenInstall', [pipSpec: 'git+https://git.example.com/ops/bluegreen.git@v0.1.0'])
        assert cli == '/ws/.bluegreen-venv/bin/bluegreen'
        assert env.BLUEGREEN_CLI == cli
        assert calls.size() == 1
        assert calls[0].env.BLUEGREEN_VENV == '/ws/.bluegreen-venv'
        assert calls[0].env.BLUEGREEN_PIP_SPEC == 'git+https://git.example.com/ops/bluegreen.git@v0.1.0'
        assertShellTextIsConstant()
    }
}
