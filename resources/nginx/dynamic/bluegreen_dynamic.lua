-- bluegreen dynamic mode: each service's peers are chosen per request from a shared dict,
-- which a loopback-only control endpoint replaces without an nginx reload.
--
-- Shared dict keys: "state" = JSON {"generation": G, "services": {name: [server, ...]},
-- "chains": {name: [chain, ...]}},
-- "generation" = G (read on every request to notice a change), "lock" (writers),
-- "worker:<id>" = JSON {"pid", "generation"} (what each worker really uses),
-- "active:<address>:<port>" = requests in flight to that peer (for draining).
-- A server is {"address": IPv4, "port": 1-65535, "weight": 0-100}. A chain keeps the callers
-- of one release on one color of a service with an internal endpoint: {"side": "new"|"old",
-- "color": "blue"|"green", "callers": [IPv4, ...], "servers": [server, ...]}; a request that
-- enters the internal endpoint from a caller's address goes to that chain's servers only.

local cjson = require "cjson.safe"
local balancer = require "ngx.balancer"

local M = {}

local DICT = "bluegreen"
local MAX_SERVERS = 256
local MAX_CALLERS = 1024
local SERVER_KEYS = { address = true, port = true, weight = true }
local CHAIN_KEYS = { side = true, color = true, callers = true, servers = true }
local SIDES = { new = true, old = true }
local COLORS = { blue = true, green = true }

local known = {}          -- service name -> true: the services with an upstream in this config
local endpoints = {}      -- service name -> true: those with an internal endpoint (chains)
local local_gen = nil     -- generation this worker's `routes` were built from
-- service -> { peers = {{key, address, port, weight, current}...},
--              callers = {address -> side}, sides = {side -> peers} }
local routes = {}

-- validation ------------------------------------------------------------------------------

local function count(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n
end

local function is_list(t)
    local n = count(t)
    for i = 1, n do
        if t[i] == nil then return false end
    end
    return true
end

local function is_int(v, lo, hi)
    return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

local function is_ipv4(s)
    if type(s) ~= "string" or #s > 15 then return false end
    local octets = { s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
    if #octets ~= 4 then return false end
    for _, o in ipairs(octets) do
        if (#o > 1 and o:sub(1, 1) == "0") or tonumber(o) > 255 then return false end
    end
    return true
end

local function is_service_name(s)
    return type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][a-z0-9._-]*$") ~= nil
        and not s:find("..", 1, true)
end

-- A validated copy of one service's server list, or nil and why.
local function check_servers(name, list)
    if type(list) ~= "table" or not is_list(list) then
        return nil, name .. ": servers must be a list"
    end
    if #list == 0 then return nil, name .. ": no servers" end
    if #list > MAX_SERVERS then return nil, name .. ": more than " .. MAX_SERVERS .. " servers" end
    local out, seen, live = {}, {}, 0
    for i, s in ipairs(list) do
        if type(s) ~= "table" or is_list(s) and count(s) > 0 then
            return nil, name .. ": server " .. i .. " must be an object"
        end
        for k in pairs(s) do
            if not SERVER_KEYS[k] then
                return nil, name .. ": server " .. i .. ": unknown key " .. tostring(k)
            end
        end
        if not is_ipv4(s.address) then
            return nil, name .. ": server " .. i .. ": address must be an IPv4 address"
        end
        if not is_int(s.port, 1, 65535) then
            return nil, name .. ": server " .. i .. ": port must be an integer from 1 to 65535"
        end
        if not is_int(s.weight, 0, 100) then
            return nil, name .. ": server " .. i .. ": weight must be an integer from 0 to 100"
        end
        local key = s.address .. ":" .. string.format("%d", s.port)
        if seen[key] then return nil, name .. ": server " .. key .. " listed twice" end
        seen[key] = true
        if s.weight > 0 then live = live + 1 end
        out[i] = { address = s.address, port = s.port, weight = s.weight }
    end
    if live == 0 then return nil, name .. ": no server with a weight above 0" end
    return out
end

local function is_object(t)
    return type(t) == "table" and not (is_list(t) and count(t) > 0)
end

-- A validated copy of one service's chains (one per side at most), or nil and why.
local function check_chains(name, list)
    if type(list) ~= "table" or not is_list(list) or #list == 0 or #list > 2 then
        return nil, name .. ": chains must be a list of one or two chains"
    end
    local out, sides, callers = {}, {}, {}
    for i, c in ipairs(list) do
        local where = name .. ": chain " .. i
        if not is_object(c) then return nil, where .. " must be an object" end
        for k in pairs(c) do
            if not CHAIN_KEYS[k] then return nil, where .. ": unknown key " .. tostring(k) end
        end
        if not SIDES[c.side] or sides[c.side] then
            return nil, where .. ": side must be new or old, each once"
        end
        sides[c.side] = true
        if not COLORS[c.color] then return nil, where .. ": color must be blue or green" end
        local ips = c.callers
        if type(ips) ~= "table" or not is_list(ips) or #ips == 0 or #ips > MAX_CALLERS then
            return nil, where .. ": callers must be a list of 1 to " .. MAX_CALLERS .. " addresses"
        end
        for _, ip in ipairs(ips) do
            if not is_ipv4(ip) then return nil, where .. ": a caller must be an IPv4 address" end
            if callers[ip] then return nil, where .. ": caller " .. ip .. " listed twice" end
            callers[ip] = true
        end
        local servers, err = check_servers(where, c.servers)
        if not servers then return nil, err end
        local copy = {}
        for j, ip in ipairs(ips) do copy[j] = ip end
        out[i] = { side = c.side, color = c.color, callers = copy, servers = servers }
    end
    return out
end

-- Validated {name: servers} and {name: chains} from a document {"services": {...},
-- "chains": {...}} (chains only of services it names), or nil and why.
-- `only_known`: reject services without an upstream (payloads); else skip them (state file,
-- where bluegreen also keeps each service's color and weight, "colors", which nginx ignores).
local function check_document(doc, only_known)
    if type(doc) ~= "table" then return nil, "the body must be a JSON object" end
    for k in pairs(doc) do
        if k ~= "services" and k ~= "chains" and (only_known or k ~= "colors") then
            return nil, "unknown key " .. tostring(k)
        end
    end
    local services = doc.services
    if type(services) ~= "table" or count(services) == 0 then
        return nil, "services must be a non-empty object"
    end
    local out = {}
    for name, list in pairs(services) do
        if not is_service_name(name) then
            return nil, "invalid service name " .. cjson.encode(tostring(name))
        end
        if known[name] then
            local servers, err = check_servers(name, list)
            if not servers then return nil, err end
            out[name] = servers
        elseif only_known then
            return nil, "unknown service " .. name .. " (no upstream for it in this nginx)"
        else
            ngx.log(ngx.WARN, "bluegreen: state file names ", name, ", which has no upstream here")
        end
    end
    local chains = doc.chains
    if chains == nil then chains = {} end
    if not is_object(chains) then return nil, "chains must be an object" end
    local out_chains = {}
    for name, list in pairs(chains) do
        if type(name) ~= "string" or services[name] == nil then
            return nil, "chains of " .. cjson.encode(tostring(name)) .. ": not in services"
        end
        if out[name] and not endpoints[name] then
            if only_known then return nil, name .. ": chains need an internal endpoint" end
            ngx.log(ngx.WARN, "bluegreen: state file chains ", name, ", which has no endpoint here")
        elseif out[name] then
            local checked, err = check_chains(name, list)
            if not checked then return nil, err end
            out_chains[name] = checked
        end
    end
    return out, out_chains
end

-- state in the shared dict ----------------------------------------------------------------

local function stored_state(dict)
    local blob = dict:get("state")
    local st = blob and cjson.decode(blob)
    if type(st) ~= "table" then
        return { generation = dict:get("generation") or 0, services = {}, chains = {} }
    end
    st.chains = st.chains or {}
    return st
end

local function store(dict, st)
    local blob = cjson.encode(st)
    local ok, err = dict:safe_set("state", blob)
    if not ok then return nil, "shared dict: " .. tostring(err) end
    ok, err = dict:safe_set("generation", st.generation)
    if not ok then return nil, "shared dict: " .. tostring(err) end
    return true
end

local function with_lock(dict, fn)
    local deadline = ngx.now() + 5
    while true do
        local ok = dict:add("lock", true, 10)
        if ok then break end
        if ngx.now() >= deadline then return nil, "another change holds the lock" end
        ngx.sleep(0.001)
    end
    local ok, res, err = pcall(fn)
    dict:delete("lock")
    if not ok then return nil, res end
    return res, err
end

local function peers_of(servers)
    local peers = {}
    for _, s in ipairs(servers) do
        if s.weight > 0 then
            peers[#peers + 1] = { key = s.address .. ":" .. string.format("%d", s.port),
                                  address = s.address, port = s.port, weight = s.weight,
                                  current = 0 }
        end
    end
    return peers
end

-- Rebuild this worker's peers when the dict holds a newer generation.
local function sync()
    local dict = ngx.shared[DICT]
    local gen = dict:get("generation")
    if gen == local_gen then return end
    local st = stored_state(dict)
    local fresh = {}
    for name, servers in pairs(st.services or {}) do
        local route = { peers = peers_of(servers), callers = {}, sides = {} }
        for _, c in ipairs(st.chains[name] or {}) do
            route.sides[c.side] = peers_of(c.servers)
            for _, ip in ipairs(c.callers) do route.callers[ip] = c.side end
        end
        fresh[name] = route
    end
    routes, local_gen = fresh, st.generation
    dict:set("worker:" .. ngx.worker.id(),
             cjson.encode({ pid = ngx.worker.pid(), generation = local_gen }))
end

-- phases ------------------------------------------------------------------------------------

-- init_by_lua (master, at start and at every reload): the known services, and the state
-- last recorded by bluegreen, which wins over what a reload kept in the dict.
function M.init(opts)
    known, endpoints = {}, {}
    for _, name in ipairs(opts.services) do known[name] = true end
    for _, name in ipairs(opts.endpoints or {}) do endpoints[name] = true end
    local dict = ngx.shared[DICT]
    local prev = stored_state(dict)
    local services, chains, err
    local fh
    fh, err = io.open(opts.state_file, "r")
    if fh then
        local text = fh:read("*a")
        fh:close()
        local doc, derr = cjson.decode(text)
        services, chains = check_document(doc, false)
        if not services then
            err = "invalid state file " .. opts.state_file .. ": " .. tostring(derr or chains)
        end
    end
    if not services then
        -- keep what this nginx already served (a reload), never an empty set for a known one
        if next(known) then
            ngx.log(ngx.WARN, "bluegreen: ", err, "; keeping the routes in memory")
        end
        services, chains = {}, {}
        for name, servers in pairs(prev.services or {}) do
            if known[name] then
                services[name] = servers
                if endpoints[name] then chains[name] = prev.chains[name] end
            end
        end
    end
    for name in pairs(known) do
        if not services[name] then
            ngx.log(ngx.ERR, "bluegreen: no recorded servers for ", name, "; it answers 502")
        end
    end
    local ok, serr = store(dict, { generation = (prev.generation or 0) + 1, services = services,
                                   chains = chains })
    if not ok then error("bluegreen: " .. serr) end
end

function M.init_worker()
    sync()
    local ok, err = ngx.timer.every(1, function(premature)
        if not premature then sync() end
    end)
    if not ok then ngx.log(ngx.ERR, "bluegreen: cannot start the sync timer: ", err) end
end

-- Smooth weighted round robin (as nginx's own), skipping the peers this request tried.
local function pick(peers, tried)
    local best, total = nil, 0
    for _, p in ipairs(peers) do
        if not tried[p.key] then
            p.current = p.current + p.weight
            total = total + p.weight
            if best == nil or p.current > best.current then best = p end
        end
    end
    if best then best.current = best.current - total end
    return best
end

-- balancer_by_lua of the upstream of `name` (`internal`: of its internal endpoint, where a
-- caller of a chain is kept on that chain's servers). Without a peer set here, nginx falls
-- back to the upstream's only server, marked down: 502 "no live upstreams".
function M.balance(name, internal)
    sync()
    local route = routes[name]
    local peers = route and route.peers
    if route and internal then
        local side = route.callers[ngx.var.remote_addr]
        if side then peers = route.sides[side] end
    end
    if not peers or #peers == 0 then
        ngx.log(ngx.ERR, "bluegreen: no servers for ", name)
        return
    end
    local ctx = ngx.ctx
    local tried = ctx.bluegreen_tried
    if tried == nil then
        tried = {}
        ctx.bluegreen_tried = tried
        -- one try per peer: the placeholder server is down, so nginx counts none for it
        balancer.set_more_tries(#peers)
    end
    local peer = pick(peers, tried)
    if peer == nil then return end  -- every peer tried
    tried[peer.key] = true
    local ok, err = balancer.set_current_peer(peer.address, peer.port)
    if not ok then
        ngx.log(ngx.ERR, "bluegreen: cannot use ", peer.key, " for ", name, ": ", err)
        return
    end
    local dict = ngx.shared[DICT]
    if ctx.bluegreen_peer then dict:incr("active:" .. ctx.bluegreen_peer, -1, 0) end
    dict:incr("active:" .. peer.key, 1, 0)
    ctx.bluegreen_peer = peer.key
end

-- log_by_lua (http level): the request no longer uses its peer.
function M.log()
    local key = ngx.ctx.bluegreen_peer
    if key then
        ngx.shared[DICT]:incr("active:" .. key, -1, 0)
        ngx.ctx.bluegreen_peer = nil
    end
end

-- the control endpoint ------------------------------------------------------------------------

local function respond(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(cjson.encode(body))
    return ngx.exit(status)
end

local function snapshot()
    local dict = ngx.shared[DICT]
    local st = stored_state(dict)
    local workers = {}
    for id = 0, ngx.worker.count() - 1 do
        local w = cjson.decode(dict:get("worker:" .. id) or "{}")
        workers[#workers + 1] = { id = id, pid = w and w.pid or cjson.null,
                                  generation = w and w.generation or cjson.null }
    end
    local names, with_endpoint = {}, {}
    for name in pairs(known) do names[#names + 1] = name end
    for name in pairs(endpoints) do with_endpoint[#with_endpoint + 1] = name end
    table.sort(names)
    table.sort(with_endpoint)
    local active = {}
    for _, key in ipairs(dict:get_keys(0)) do
        if key:sub(1, 7) == "active:" then
            local n = dict:get(key)
            if n and n > 0 then active[key:sub(8)] = n end
        end
    end
    return { generation = st.generation, services = st.services, chains = st.chains, known = names,
             endpoints = with_endpoint, workers = workers, active = active }
end

local function post()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then return respond(400, { error = "empty body (or larger than the buffer)" }) end
    local doc, derr = cjson.decode(body)
    if doc == nil then return respond(400, { error = "malformed JSON: " .. tostring(derr) }) end
    local services, chains = check_document(doc, true)
    if not services then return respond(400, { error = chains }) end
    local dict = ngx.shared[DICT]
    local gen, err = with_lock(dict, function()
        local st = stored_state(dict)
        local all, all_chains = {}, {}
        for name, servers in pairs(st.services or {}) do all[name] = servers end
        for name, list in pairs(st.chains) do all_chains[name] = list end
        for name, servers in pairs(services) do  -- a service posted gets exactly its chains
            all[name] = servers
            all_chains[name] = chains[name]
        end
        local new = { generation = (st.generation or 0) + 1, services = all, chains = all_chains }
        local ok, serr = store(dict, new)
        if not ok then
            store(dict, st)  -- put back what was there
            return nil, serr
        end
        return new.generation
    end)
    if not gen then return respond(503, { error = err }) end
    sync()
    return respond(200, { generation = gen, services = services, chains = chains })
end

-- content_by_lua of the control location: GET what is served, POST new routes.
function M.control()
    local method = ngx.req.get_method()
    if method == "GET" then
        sync()
        return respond(200, snapshot())
    elseif method == "POST" then
        return post()
    end
    ngx.header["Allow"] = "GET, POST"
    return respond(405, { error = "use GET or POST" })
end

return M
