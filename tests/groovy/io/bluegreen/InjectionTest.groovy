package io.bluegreen

import org.junit.Test

/**
 * Hostile values reach the CLI as one literal argument and never a shell: the sh mock runs
 * the exact script under bash with the recorded environment, against a stand-in CLI that
 * prints its argv, and nothing else happens.
 */
class InjectionTest extends StepTestBase {
    File pwned = new File('/tmp/bluegreen-pwned-' + System.nanoTime())

    @Test
    void hostileServiceNamesStayLiteral() {
        File fake = File.createTempFile('fake-bluegreen', '.sh')
        fake.text = '#!/bin/sh\nfor a in "$@"; do printf "<%s>\\n" "$a"; done\nprintf "%s" "$BLUEGREEN_ARGV"\n'
        fake.setExecutable(true)
        List outputs = []
        shHandler = { Map c ->
            ProcessBuilder pb = new ProcessBuilder('bash', '-c', c.script)
            pb.environment().putAll(c.env)
            pb.environment().BLUEGREEN_CLI = fake.path
            Process p = pb.start()
            String out = p.inputStream.text
            p.waitFor()
            outputs << out
            return out
        }
        ["x; touch ${pwned}", "\$(touch ${pwned})", "`touch ${pwned}`", "a' ; touch ${pwned}; '",
         "a\" && touch ${pwned} #"].each { String name ->
            String out = step('getCurrentColor', [serviceName: name])
            assert out.startsWith('<--argv-json-env>\n<BLUEGREEN_ARGV>\n')
            assert new groovy.json.JsonSlurper().parseText(out.readLines()[2]) == ['color', 'current', name]
        }
        assert !pwned.exists()
    }

    @Test
    void theRealCliRefusesThemWithExit2() {
        File cli = new File(ProjectSource.repoDir(), '.venv/bin/bluegreen')
        shHandler = { Map c ->
            ProcessBuilder pb = new ProcessBuilder('bash', '-c', c.script)
            pb.environment().putAll(c.env)
            pb.environment().BLUEGREEN_CLI = cli.path
            pb.environment().BLUEGREEN_REGISTRY = 'file'
            pb.environment().BLUEGREEN_STATE_FILE = File.createTempDir().path + '/s.json'
            pb.redirectErrorStream(true)
            Process p = pb.start()
            c.output = p.inputStream.text
            return p.waitFor()
        }
        ["x; touch ${pwned}", "\$(id)"].each { String name ->
            int status = binding.getVariable('bluegreenCli').call([:], ['color', 'next', name], [returnStatus: true])
            assert status == 2
            assert calls[-1].output.contains('invalid service name')
        }
        assert !pwned.exists()
    }
}
