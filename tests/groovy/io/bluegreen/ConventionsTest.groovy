package io.bluegreen

import org.junit.Test

/** Walks vars/: every step has its help page, takes a Map, and only the runner runs sh. */
class ConventionsTest {
    File vars = new File(ProjectSource.repoDir(), 'vars')
    List<File> steps = vars.listFiles().findAll { it.name.endsWith('.groovy') }.sort()

    @Test
    void theStepsAreThere() {
        assert steps*.name*.replace('.groovy', '') as Set == [
                'blueGreenDeploy', 'bluegreenCli', 'bluegreenInstall', 'deployBG', 'getCurrentColor',
                'getNextColor', 'rollbackBG', 'runBGPostIntegrationTests', 'runBGPreIntegrationTests',
                'stopBG', 'updateBGProxy'] as Set
    }

    @Test
    void everyStepHasAHelpPageThatStartsWithItsSignature() {
        steps.each { File f ->
            String name = f.name.replace('.groovy', '')
            File txt = new File(vars, "${name}.txt")
            assert txt.exists(): "${name} has no vars/${name}.txt"
            assert txt.text.readLines()[0].contains("${name}(Map params"): "${name}.txt: first line is not the signature"
        }
    }

    @Test
    void everyCallTakesAMap() {
        steps.each { File f ->
            assert f.text =~ /(?m)^def call\(Map params/: "${f.name}: call must take a Map"
        }
    }

    @Test
    void onlyTheRunnerAndTheInstallerRunSh() {
        steps.findAll { !(it.name in ['bluegreenCli.groovy', 'bluegreenInstall.groovy']) }.each { File f ->
            assert !(f.text =~ /\bsh\s*[(\s]/): "${f.name} runs sh itself: go through bluegreenCli"
            assert !f.text.contains('bat('): f.name
        }
    }

    @Test
    void noShellTextIsBuiltFromValues() {
        // sh scripts are single-quoted constants or a library resource: never a GString.
        steps.each { File f ->
            f.text.findAll(/sh\(script: [^,]+/).each { String s ->
                assert s.startsWith("sh(script: '") || s.startsWith('sh(script: libraryResource('): "${f.name}: ${s}"
            }
        }
    }

    @Test
    void stepsAreThin() {
        steps.findAll { !(it.name in ['bluegreenCli.groovy', 'blueGreenDeploy.groovy']) }.each { File f ->
            int code = f.readLines().count { it.trim() && !it.trim().startsWith('//') }
            assert code <= 16: "${f.name} has ${code} lines: logic belongs in the Python CLI"
        }
    }
}
