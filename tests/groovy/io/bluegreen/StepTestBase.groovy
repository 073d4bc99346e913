package io.bluegreen

import com.lesfurets.jenkins.unit.BasePipelineTest
import com.lesfurets.jenkins.unit.PipelineTestHelper
import com.lesfurets.jenkins.unit.cps.BasePipelineTestCPS
import com.lesfurets.jenkins.unit.global.lib.SourceRetriever
import groovy.json.JsonSlurper
import org.junit.Before
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

import static com.lesfurets.jenkins.unit.global.lib.LibraryConfiguration.library

/** Loads this repository itself as the shared library 'bluegreen'. */
class ProjectSource implements SourceRetriever {
    @Override
    List<URL> retrieve(String repository, String branch, String targetPath) {
        return [repoDir().toURI().toURL()]
    }

    static File repoDir() {
        return new File(System.getenv('BLUEGREEN_REPO') ?: '.').canonicalFile
    }
}

/** What Jenkins' error step throws. */
class PipelineError extends RuntimeException {
    PipelineError(String message) { super(message) }
}

/**
 * Base of the step tests: mocks that behave as Jenkins does (error throws, withEnv and
 * withCredentials set environment variables for the duration of their closure) and records
 * every sh call with the environment it ran in and the CLI argv decoded from BLUEGREEN_ARGV.
 *
 * Every test runs twice: [plain] as BasePipelineTest, and [cps] with the helper of
 * BasePipelineTestCPS, which compiles the library with groovy-cps's CpsTransformer, runs it in
 * the CPS interpreter and serializes the program's state at each step of a step's body, as
 * Jenkins does. Code that works only outside CPS (a CPS closure handed to .each or .collect,
 * a Matcher or other unserializable local across a step) fails the [cps] run.
 */
@RunWith(Parameterized)
abstract class StepTestBase extends BasePipelineTest {
    @Parameterized.Parameters(name = '{0}')
    static List<Object[]> modes() {
        return [['plain'] as Object[], ['cps'] as Object[]]
    }

    @Parameterized.Parameter
    public String mode

    List<Map> calls = []
    List<String> nodes = []
    List<String> stages = []
    Map<String, String> env = [:]
    /** Files of the agent's workspace that readFile/fileExists see, and what writeFile wrote. */
    Map<String, String> workspace = [:]
    Map<String, Map> written = [:]
    /** Answers an sh call: returns what sh returns (stdout, status or null). */
    Closure shHandler = { Map call -> call.returnStatus ? 0 : (call.returnStdout ? '' : null) }

    @Before
    @Override
    void setUp() throws Exception {
        helper = mode == 'cps' ? new BasePipelineTestCPS().helper : new PipelineTestHelper()
        scriptRoots += 'tests/groovy/resources/jenkins'
        super.setUp()
        helper.registerSharedLibrary(library().name('bluegreen').defaultVersion('main')
                .allowOverride(true).implicit(true).targetPath('unused')
                .retriever(new ProjectSource()).build())
        binding.setVariable('env', env)
        env.WORKSPACE = '/ws'
        helper.registerAllowedMethod('sh', [Map], { Map m ->
            Map call = [script: m.script, label: m.label, returnStdout: m.returnStdout ?: false,
                        returnStatus: m.returnStatus ?: false, env: new LinkedHashMap(env)]
            if (env.BLUEGREEN_ARGV != null) {
                call.argv = new JsonSlurper().parseText(env.BLUEGREEN_ARGV)
            }
            calls << call
            return shHandler(call)
        })
        helper.registerAllowedMethod('withEnv', [List, Closure], { List list, Closure body ->
            withVars(list.collectEntries { String kv ->
                int i = kv.indexOf('=')
                [(kv.substring(0, i)): kv.substring(i + 1)]
            }, body)
        })
        helper.registerAllowedMethod('string', [Map], { Map m -> [kind: 'string'] + m })
        helper.registerAllowedMethod('dockerCert', [Map], { Map m -> [kind: 'dockerCert'] + m })
        helper.registerAllowedMethod('withCredentials', [List, Closure], { List creds, Closure body ->
            withVars(creds.collectEntries { [(it.variable): "secret-of-${it.credentialsId}".toString()] }, body)
        })
        helper.registerAllowedMethod('error', [String], { String msg -> throw new PipelineError(msg) })
        helper.registerAllowedMethod('stage', [String, Closure], { String name, Closure body ->
            stages << name
            helper.callClosure(body)
        })
        helper.registerAllowedMethod('node', [String, Closure], { String name, Closure body ->
            nodes << name
            helper.callClosure(body)
        })
        helper.registerAllowedMethod('lock', [Map, Closure], { Map m, Closure body -> helper.callClosure(body) })
        helper.registerAllowedMethod('input', [Map], null)
        helper.registerAllowedMethod('libraryResource', [String], { String path ->
            new File(ProjectSource.repoDir(), "resources/${path}").text
        })
        helper.registerAllowedMethod('libraryResource', [Map], { Map m ->
            byte[] bytes = new File(ProjectSource.repoDir(), "resources/${m.resource}").bytes
            m.encoding == 'Base64' ? bytes.encodeBase64().toString() : new String(bytes, 'UTF-8')
        })
        helper.registerAllowedMethod('writeFile', [Map], { Map m -> written[m.file] = m })
        helper.registerAllowedMethod('fileExists', [String], { String path -> workspace.containsKey(path) })
        helper.registerAllowedMethod('readFile', [String], { String path -> workspace[path] })
        loadScript('empty.jenkins')
        fixtures = loadScript('fixtures.jenkins')
    }

    /** Closures as a Jenkinsfile writes them (CPS-compiled and serializable in [cps] mode). */
    Script fixtures

    Object withVars(Map vars, Closure body) {
        Map saved = new LinkedHashMap(env)
        env.putAll(vars)
        try {
            return helper.callClosure(body)
        } finally {
            env.clear()
            env.putAll(saved)
        }
    }

    /** Call a vars/ step as a Jenkinsfile would, with a Map or the book's positional arguments. */
    Object step(String name, Map params) {
        return binding.getVariable(name).call(params)
    }

    Object step(String name, String... args) {
        return binding.getVariable(name).call(*args)
    }

    /** The bluegreen CLI argv of each sh call, in order. */
    List<List> argvs() {
        return calls.findAll { it.argv != null }.collect { it.argv }
    }

    /** Every sh script must be the constant runner line or a library resource. */
    void assertShellTextIsConstant() {
        calls.each { assert it.script == 'exec "${BLUEGREEN_CLI:-bluegreen}" --argv-json-env BLUEGREEN_ARGV' ||
                            it.script == new File(ProjectSource.repoDir(), 'resources/bluegreen/install-cli.sh').text }
    }
}
