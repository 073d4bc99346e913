package io.bluegreen

import org.junit.Test

/**
 * Walks vars/: every step has its help page, takes a Map (the book's steps also their positional
 * arguments), only the runner runs sh, and nothing hands a closure to a collection method
 * outside @NonCPS (Jenkins's CPS interpreter would run such a closure once).
 */
class ConventionsTest {
    File vars = new File(ProjectSource.repoDir(), 'vars')
    List<File> steps = vars.listFiles().findAll { it.name.endsWith('.groovy') }.sort()

    @Test
    void theStepsAreThere() {
        assert steps*.name*.replace('.groovy', '') as Set == [
                'blueGreenDeploy', 'blueGreenDeployApp', 'bluegreenCli', 'bluegreenInstall', 'deployBG', 'getCurrentColor',
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
    void theBooksStepsTakeTheBooksPositionalArguments() {
        Map book = [getCurrentColor          : 'String serviceName, String prodIp',
                    getNextColor             : 'String currentColor',
                    deployBG                 : 'String serviceName, String prodIp, String color',
                    runBGPreIntegrationTests : 'String serviceName, String prodIp, String color',
                    updateBGProxy            : 'String serviceName, String proxyNode, String color',
                    runBGPostIntegrationTests: 'String serviceName, String prodIp, String proxyIp, ' +
                            'String proxyNode, String currentColor, String nextColor',
                    stopBG                   : 'String serviceName, String prodIp, String color']
        book.each { name, signature ->
            assert new File(vars, "${name}.groovy").text.contains("def call(${signature})"): name
            assert new File(vars, "${name}.txt").text.contains("${name}(${signature.replace('String ', '')})"): name
        }
    }

    @Test
    void closuresReachCollectionMethodsOnlyInNonCpsCode() {
        steps.each { File f ->
            boolean nonCps = false
            f.readLines().each { String line ->
                if (line.trim() == '@NonCPS') nonCps = true
                if (line =~ /\.(each|collect|collectEntries|find|findAll|any|every|sort|inject|eachWithIndex)\s*\{/) {
                    assert nonCps: "${f.name}: '${line.trim()}' hands a closure to a collection method outside @NonCPS"
                }
                if (line.startsWith('}')) nonCps = false
            }
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
