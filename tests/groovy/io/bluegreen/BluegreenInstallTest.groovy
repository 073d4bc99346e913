package io.bluegreen

import org.junit.Test

class BluegreenInstallTest extends StepTestBase {
    static final String ARCHIVE = 'resources/bluegreen/bluegreen-cli.tar.gz'

    @Test
    void withoutSettingsInstallsTheCliArchiveOfThisLibraryVersion() {
        String cli = step('bluegreenInstall', [:])
        assert cli == '/ws/.bluegreen-venv/bin/bluegreen'
        assert env.BLUEGREEN_CLI == cli
        Map file = written['/ws/.bluegreen-venv.cli.tar.gz']
        assert file.encoding == 'Base64'
        assert file.text.decodeBase64() == new File(ProjectSource.repoDir(), ARCHIVE).bytes
        assert calls.size() == 1
        assert calls[0].env.BLUEGREEN_VENV == '/ws/.bluegreen-venv'
        assert calls[0].env.BLUEGREEN_PIP_SPEC == '/ws/.bluegreen-venv.cli.tar.gz'
        assertShellTextIsConstant()
    }

    @Test
    void pipSpecOverridesTheArchive() {
        step('bluegreenInstall', [pipSpec: 'git+https://git.example.com/ops/bluegreen.git@v0.1.0', venv: '/opt/bg'])
        assert written.isEmpty()
        assert calls[0].env.BLUEGREEN_VENV == '/opt/bg'
        assert calls[0].env.BLUEGREEN_PIP_SPEC == 'git+https://git.example.com/ops/bluegreen.git@v0.1.0'
        assert env.BLUEGREEN_CLI == '/opt/bg/bin/bluegreen'
    }

    @Test
    void theEnvironmentsPipSpecToo() {
        env.BLUEGREEN_PIP_SPEC = 'bluegreen==0.1.0'
        step('bluegreenInstall', [:])
        assert written.isEmpty()
        assert calls[0].env.BLUEGREEN_PIP_SPEC == 'bluegreen==0.1.0'
    }
}
