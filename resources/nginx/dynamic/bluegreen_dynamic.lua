-- bluegreen dynamic mode: each service's peers are chosen per request from a shared dict,
-- which a loopback-only control endpoint replaces without an nginx reload.
--
-- Shared dict "bluegreen" (routes only, written with safe_* calls: nothing in it is ever
-- evicted), one key per service so that a change costs what it changes:
-- "route:<name>:<V>" = JSON {"servers": [server, ...], "chains": [chain, ...]?, "release":
-- {...}?}, the service's route as set by generation V; "ver:<name>" = V (the service's
-- version once its writer has finished; 0: none yet); "delta:<G>" = JSON {"names": [name,
-- ...], "full": true?} (what generation G set; full: every route, the others gone; kept
-- for KEEP_DELTAS generations); "generation" = G (read on every request to notice a change);
-- "lock" (writers). A change writes its services' keys and its delta first (a full dict
-- refuses them: they go, nothing changed), then flips "generation" (all its services at
-- once), then sets their versions and drops the keys they replace. A worker applies the
-- deltas between its generation and the dict's (their services only), or rebuilds all
-- (just started, further behind, a full generation). Readers of a generation G take a
-- service's version from G's delta, else from "ver:", and read again when a newer change
-- got in the way. Shared dict "bluegreen_stats" (may evict, holds nothing that routes):
-- "worker:<id>" = JSON {"pid", "generation"} (what each worker really uses),
-- "active:<address>:<port>" = requests in flight to that peer (for draining).
-- Shared dict "bluegreen_figures" (sized for every service's keys, so nothing is evicted):
-- "epoch" (random, set when nginx starts: a reload keeps the dict and the epoch, a restart
-- starts both anew) and per service and color "c|<service>|<color>|<field>" = a cumulative
-- count: "r" responses, "e" of them 5xx, "f" tries on a peer that failed (no response header:
-- refused, reset, timed out), "b<i>" responses whose upstream time is within LATENCY_MS[i]
-- (i = #LATENCY_MS + 1: above the last). Counted in log_by_lua, by the color of the peer the
-- request ended on (a failed try: at the retry); a server of no color is not counted.
-- Each worker counts in a plain Lua table (no shared dict, no lock per request) and adds its
-- counts to the dict in one batch every FLUSH_INTERVAL (0.25 s, a timer), when its timer runs
-- early because the worker exits (reload, stop: and each request it still logs while exiting
-- is added at once), and when it answers a figures GET (its own counts). A figures GET answers
-- once every current worker has flushed after the GET began (it waits for them, at most
-- FLUSH_WAIT, 1 s): it holds every request logged before it, and takes up to one interval to
-- answer. Bounds: a worker whose timer runs over 1 s late (a worker blocked) is read as it last
-- flushed; during a reload, the counts of a worker being replaced come with its exit flush,
-- which follows the new workers' start by the master's signal (milliseconds). Each worker
-- records when it last flushed in "bluegreen_stats": "flushed:<pid>" (expires after 60 s).
--
-- The control endpoint answers only requests that carry the secret of `secret_file` (read by
-- the master at start and at each reload, compared in constant time), have no Origin header
-- (no browser page can route) and, for a POST, a JSON content type. JSON is strict: what
-- Python's json refuses (hex or leading-zero numbers, NaN, Infinity, trailing commas) is refused.
-- A server is {"address": IPv4, "port": 1-65535, "weight": 0-100, "color": "blue"|"green"
-- (optional: what it is counted as)}. A chain keeps the callers
-- of one release on one color of a service with an internal endpoint: {"side": "new"|"old",
-- "color": "blue"|"green", "callers": [IPv4, ...], "servers": [server, ...]}; a request that
-- enters the internal endpoint from a caller's address goes to that chain's servers only.
-- A release splits a service between its two colors: {"new": "blue"|"green", "weight": 0-100,
-- "sticky": true|false}; the service's servers include both colors' (those of "new" may have
-- weight 0). Sticky: a client's request goes to the new color's servers when its bucket (the
-- cookie "bg_bucket", 0-99; a client without a valid one gets a random one, set on the
-- response) is below the weight, else to the old color's; raising the weight only ever moves
-- clients from old to new. A caller kept on a chain stays on it.
-- Routing table (`table` in init's options: bluegreen's --nginx-routing table): the public
-- locations are not nginx `location` blocks, one per service, but a table in the routes: a
-- service's route carries its "location" (a path prefix, or none), one `location /` runs
-- M.route() (access phase), which picks the service of the longest prefix of $uri as nginx
-- picks a prefix location (a URI equal to a location but its trailing slash: 301 to it, as
-- nginx's auto redirect; none: 404), and one upstream's balancer balances that service. Any
-- valid service name is accepted (no upstream per service), so adding one is a POST. A POST's
-- "locations": {name: path} (a posted service without one has none); two services never hold
-- one location.
-- Preview: with a preview secret (`preview_file`, read by the master at start and reload), a
-- request with the header X-Bluegreen-Preview: <secret>, or the cookie "bg_preview" that a
-- request with ?bluegreen-preview=<secret> gets (its value an HMAC of the secret, not the
-- secret), is served by a release's new color at any weight, 0 included (compared in
-- constant time). Without a secret they do nothing. The secret never reaches a backend: the
-- header is taken out of the request (rewrite phase, http level), and the preview URL answers
-- 302 to the same URL without it, setting the cookie.

local cjson = require("cjson.safe").new()
local balancer = require "ngx.balancer"
local bit = require "bit"

cjson.decode_invalid_numbers(false)  -- 0x50, 007, NaN, Infinity: not JSON
cjson.decode_max_depth(16)

local M = {}

local DICT = "bluegreen"
local STATS = "bluegreen_stats"
local FIGURES = "bluegreen_figures"
local LATENCY_MS = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }  -- LATENCY_BOUNDS_MS
local NBUCKETS = #LATENCY_MS + 1
local FLUSH_INTERVAL = 0.25  -- seconds between two flushes of a worker's counts to the dict
local FLUSH_WAIT = 1         -- at most this long a figures GET waits for the workers' flushes
local FLUSHED_TTL = 60       -- seconds a worker's "flushed:<pid>" stays without a new flush
local SECRET_HEADER = "X-Bluegreen-Secret"
local MAX_SERVERS = 256
local MAX_CALLERS = 1024
local KEEP_DELTAS = 8  -- generations whose delta stays: a worker further behind rebuilds all
local SERVER_KEYS = { address = true, port = true, weight = true, color = true }
local CHAIN_KEYS = { side = true, color = true, callers = true, servers = true }
local RELEASE_KEYS = { new = true, weight = true, sticky = true }
local OTHER = { blue = "green", green = "blue" }
local BUCKET_COOKIE = "bg_bucket"
local PREVIEW_COOKIE = "bg_preview"
local COOKIE_ATTRIBUTES = "; Path=/; HttpOnly; SameSite=Lax"
local SIDES = { new = true, old = true }
local COLORS = { blue = true, green = true }

local known = {}          -- service name -> true: the services with an upstream in this config
local table_mode = false  -- the routing table: any service, located by its route
local endpoints = {}      -- service name -> true: those with an internal endpoint (chains)
local local_gen = nil     -- generation this worker's `routes` were built from
local secret = nil        -- the control secret (nil: every control request is refused)
local preview = nil       -- the preview secret (nil: no preview)
local preview_token = nil -- the bg_preview cookie's value: hex HMAC-SHA1 of a fixed text
-- service -> { peers = {{key, address, port, weight, current}...},
--              callers = {address -> side}, sides = {side -> peers} }
local routes = {}
local index = nil         -- routing table: location -> service of `routes` (nil: to build)
local lengths = {}        -- routing table: the locations' lengths, longest first
local by_length = {}      -- routing table: length -> how many locations of `index` have it
local has_figures = false -- the counts dict exists (not an include older than this file)

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
-- A location as bluegreen's validate.location allows: a path of [A-Za-z0-9._~/-] from "/",
-- no "//" and no "/../" (nor a last "/..").
local function is_location(s)
    return type(s) == "string" and #s <= 1024 and s:match("^/[%w%._~/%-]*$") ~= nil
        and not s:find("//", 1, true) and not (s .. "/"):find("/../", 1, true)
end

-- Whether a service may be routed here: one with an upstream, or any (routing table).
local function admitted(name)
    return table_mode or known[name] == true
end

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
        if s.color ~= nil and not COLORS[s.color] then
            return nil, name .. ": server " .. i .. ": color must be blue or green"
        end
        local key = s.address .. ":" .. string.format("%d", s.port)
        if seen[key] then return nil, name .. ": server " .. key .. " listed twice" end
        seen[key] = true
        if s.weight > 0 then live = live + 1 end
        out[i] = { address = s.address, port = s.port, weight = s.weight, color = s.color }
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

-- A validated copy of one service's release (over its validated `servers`), or nil and why.
local function check_release(name, rel, servers)
    if not is_object(rel) then return nil, name .. ": a release must be an object" end
    for k in pairs(rel) do
        if not RELEASE_KEYS[k] then return nil, name .. ": release: unknown key " .. tostring(k) end
    end
    if not COLORS[rel.new] then return nil, name .. ": release: new must be blue or green" end
    if not is_int(rel.weight, 0, 100) then
        return nil, name .. ": release: weight must be an integer from 0 to 100"
    end
    if type(rel.sticky) ~= "boolean" then return nil, name .. ": release: sticky must be a boolean" end
    local has = {}
    for _, s in ipairs(servers) do
        if s.color then has[s.color] = true end
    end
    if not (has.blue and has.green) then
        return nil, name .. ": release: the servers must include both colors' (each with its color)"
    end
    return { new = rel.new, weight = rel.weight, sticky = rel.sticky }
end

-- Validated {name: servers}, {name: chains}, {name: release} and {name: location} from a
-- document {"services": {...}, "chains": {...}, "releases": {...}, "locations": {...}}
-- (chains, releases and locations only of services it names), or nil and why.
-- `only_known`: reject services without an upstream (payloads); else skip them (state file,
-- where bluegreen also keeps each service's color and weight, "colors", which nginx ignores).
-- Locations: a payload's only with the routing table; a state file's read, used only there.
local function check_document(doc, only_known)
    if type(doc) ~= "table" then return nil, "the body must be a JSON object" end
    for k in pairs(doc) do
        local allowed = k == "services" or k == "chains" or k == "releases"
            or (not only_known and (k == "colors" or k == "locations"))
            or (only_known and table_mode and k == "locations")
        if not allowed then
            return nil, "unknown key " .. tostring(k)
                .. (k == "locations" and " (locations need the routing table)" or "")
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
        if admitted(name) then
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
    local releases = doc.releases
    if releases == nil then releases = {} end
    if not is_object(releases) then return nil, "releases must be an object" end
    local out_releases = {}
    for name, rel in pairs(releases) do
        if type(name) ~= "string" or services[name] == nil then
            return nil, "release of " .. cjson.encode(tostring(name)) .. ": not in services"
        end
        if out[name] then
            local checked, err = check_release(name, rel, out[name])
            if not checked then return nil, err end
            out_releases[name] = checked
        end
    end
    local locations = doc.locations
    if locations == nil then locations = {} end
    if not is_object(locations) then return nil, "locations must be an object" end
    local out_locations, holder = {}, {}
    for name, loc in pairs(locations) do
        if type(name) ~= "string" or services[name] == nil then
            return nil, "location of " .. cjson.encode(tostring(name)) .. ": not in services"
        end
        if not is_location(loc) then
            return nil, "invalid location " .. cjson.encode(tostring(loc)) .. " of " .. name
        end
        if holder[loc] then
            return nil, "location " .. loc .. " given to both " .. holder[loc] .. " and " .. name
        end
        holder[loc] = name
        if out[name] and table_mode then out_locations[name] = loc end
    end
    return out, out_chains, out_releases, out_locations
end

-- state in the shared dict ----------------------------------------------------------------

local function route_key(name, version)
    return "route:" .. name .. ":" .. string.format("%d", version)
end

local function delta_key(gen)
    return "delta:" .. string.format("%d", gen)
end

-- The names generation `gen` changed (a set) and whether it replaced all routes, or nil when
-- its delta is gone (KEEP_DELTAS generations later).
local function read_delta(dict, gen)
    local blob = dict:get(delta_key(gen))
    local d = blob and cjson.decode(blob)
    if type(d) ~= "table" then return nil end
    local changed = {}
    for _, name in ipairs(d.names or {}) do changed[name] = true end
    return changed, d.full == true
end

-- One service's route as stored ({"servers", "chains"?, "release"?}), or nil when its key is
-- gone (a newer change replaced it).
local function read_route(dict, name, version)
    local blob = dict:get(route_key(name, version))
    local r = blob and cjson.decode(blob)
    if type(r) ~= "table" then return nil end
    return r
end

-- {name: route} of the services of the set `names` at the current generation, and that
-- generation; nil when the dict holds no routes or concurrent changes kept getting in the way.
-- A service's version at generation G: G when G's delta names it, none when G replaced all
-- routes without it, else "ver:<name>" (every writer before G has finished setting it; a
-- version above G: a newer change got in the way, read again).
local function read_routes(dict, names)
    for attempt = 1, 3 do
        local gen = dict:get("generation")
        if gen == nil then return nil end
        local changed, full = read_delta(dict, gen)
        local out, ok = {}, changed ~= nil
        if ok then
            for name in pairs(names) do
                local v = 0
                if changed[name] then v = gen
                elseif not full then v = dict:get("ver:" .. name) or 0 end
                if v > gen then ok = false break end
                if v > 0 then
                    local r = read_route(dict, name, v)
                    if r == nil then ok = false break end
                    out[name] = r
                end
            end
        end
        if ok and (attempt == 3 or dict:get("generation") == gen) then return out, gen end
    end
    return nil
end

-- The routes of the one JSON document an older version of this file kept ("state:<G>"),
-- of the services of `names`, or nil (a reload onto this version keeps the dict).
local function legacy_routes(dict, names)
    local gen = dict:get("generation")
    local blob = gen and dict:get("state:" .. gen)
    local st = blob and cjson.decode(blob)
    if type(st) ~= "table" or type(st.services) ~= "table" then return nil end
    local out = {}
    for name, servers in pairs(st.services) do
        if names[name] then
            out[name] = { servers = servers, chains = (st.chains or {})[name],
                          release = (st.releases or {})[name] }
        end
    end
    return out
end

-- The services the dict holds a version of (the routing table has no list of them in the
-- configuration); with upstreams per service, those of the configuration.
local function routed_names(dict)
    if not table_mode then return known end
    local names = {}
    for _, key in ipairs(dict:get_keys(0)) do
        local name = key:match("^ver:(.+)$")
        if name then names[name] = true end
    end
    return names
end

local function refused(err)
    return nil, "the shared dict " .. DICT .. " cannot hold the routes (" .. tostring(err)
        .. "): nothing changed; give nginx a larger dict"
end

-- Store `changes` ({name: route}) as generation `gen` (the current one + 1; `full`: they are
-- all the routes, the others go): each service's key and the generation's delta first (a full
-- dict refuses them: what was written goes, nothing changed), then "generation" (the change
-- is visible, all at once), then the versions they replace and old deltas go.
local function store(dict, gen, changes, full)
    local written, names = {}, {}
    local function undo(err)
        for i = #written, 1, -1 do dict:delete(written[i]) end
        return refused(err)
    end
    for name, r in pairs(changes) do
        local key = route_key(name, gen)
        local ok, err = dict:safe_set(key, cjson.encode(r))
        if not ok then return undo(err) end
        written[#written + 1] = key
        if dict:get("ver:" .. name) == nil then  -- 0: no route yet (its value's room, kept)
            ok, err = dict:safe_add("ver:" .. name, 0)
            if not ok then return undo(err) end
            written[#written + 1] = "ver:" .. name
        end
        names[#names + 1] = name
    end
    local ok, err = dict:safe_set(delta_key(gen), cjson.encode({ names = names, full = full }))
    if not ok then return undo(err) end
    written[#written + 1] = delta_key(gen)
    ok, err = dict:safe_set("generation", gen)
    if not ok then return undo(err) end
    for name in pairs(changes) do  -- a number over a number: in place, never refused
        local old = dict:get("ver:" .. name)
        ok, err = dict:safe_set("ver:" .. name, gen)
        if not ok then
            ngx.log(ngx.ERR, "bluegreen: cannot record the version of ", name, ": ", err)
        elseif old and old > 0 and old ~= gen then
            dict:delete(route_key(name, old))
        end
    end
    if full then  -- the routes of services not in `changes`, leftovers of older versions
        for _, key in ipairs(dict:get_keys(0)) do
            local name = key:match("^ver:(.+)$")
            local rname, v = key:match("^route:(.+):(%d+)$")
            if (name and not changes[name]) or (rname and tonumber(v) ~= gen)
                    or key:sub(1, 6) == "state:" then
                dict:delete(key)
            end
        end
    end
    dict:delete(delta_key(gen - KEEP_DELTAS))
    return true
end

local function with_lock(dict, fn)
    local deadline = ngx.now() + 5
    while true do
        local ok = dict:safe_add("lock", true, 10)
        if ok then break end
        if ngx.now() >= deadline then return nil, "another change holds the lock" end
        ngx.sleep(0.001)
    end
    local ok, res, err = pcall(fn)
    dict:delete("lock")
    if not ok then return nil, res end
    return res, err
end

-- The servers of one color as peers (weight 0 counts as 1: the color's own share).
local function color_peers(servers, color)
    local peers = {}
    for _, s in ipairs(servers) do
        if s.color == color then
            peers[#peers + 1] = { key = s.address .. ":" .. string.format("%d", s.port),
                                  address = s.address, port = s.port,
                                  weight = math.max(s.weight, 1), color = s.color, current = 0 }
        end
    end
    return peers
end

local function peers_of(servers)
    local peers = {}
    for _, s in ipairs(servers) do
        if s.weight > 0 then
            peers[#peers + 1] = { key = s.address .. ":" .. string.format("%d", s.port),
                                  address = s.address, port = s.port, weight = s.weight,
                                  color = s.color, current = 0 }
        end
    end
    return peers
end

-- A worker's route of one stored route.
local function build_route(r)
    local route = { peers = peers_of(r.servers), callers = {}, sides = {},
                    location = r.location }
    for _, c in ipairs(r.chains or {}) do
        route.sides[c.side] = peers_of(c.servers)
        for _, ip in ipairs(c.callers) do route.callers[ip] = c.side end
    end
    local rel = r.release
    if rel then
        route.release = { new = rel.new, weight = rel.weight, sticky = rel.sticky,
                          new_peers = color_peers(r.servers, rel.new),
                          old_peers = color_peers(r.servers, OTHER[rel.new]) }
    end
    return route
end

-- The routing table's index of this worker's routes (location -> service, and the lengths
-- of the locations, longest first): built whole after the routes were, then kept up to date
-- with the services each delta changes.
local function index_lengths()
    lengths = {}
    for len in pairs(by_length) do lengths[#lengths + 1] = len end
    table.sort(lengths, function(a, b) return a > b end)
end

local function build_index()
    index, by_length = {}, {}
    for name, route in pairs(routes) do
        local loc = route.location
        if loc then
            if index[loc] == nil then by_length[#loc] = (by_length[#loc] or 0) + 1 end
            index[loc] = name
        end
    end
    index_lengths()
end

local function index_set(loc, name)  -- name nil: the location leaves the index
    local had = index[loc] ~= nil
    index[loc] = name
    if had ~= (name ~= nil) then
        local n = (by_length[#loc] or 0) + (name and 1 or -1)
        by_length[#loc] = n > 0 and n or nil
        if n <= 1 then index_lengths() end  -- a length came or went
    end
end

-- A service's route replaced: its location moved in the index (when there is one).
local function reindex(name, old, new)
    local before, after = old and old.location, new and new.location
    if index == nil or before == after then return end
    if before and index[before] == name then index_set(before, nil) end
    if after then index_set(after, name) end
end

-- Bring this worker's routes from `local_gen` to `gen` with the deltas between them (only the
-- services they changed); false when that cannot be done (no generation yet, a delta gone or
-- replacing all routes, a route replaced again since): rebuild them all.
local function apply_deltas(dict, gen)
    if local_gen == nil or gen <= local_gen or gen - local_gen > KEEP_DELTAS then return false end
    local latest = {}
    for g = local_gen + 1, gen do
        local changed, full = read_delta(dict, g)
        if changed == nil or full then return false end
        for name in pairs(changed) do latest[name] = g end
    end
    local built = {}
    for name, g in pairs(latest) do
        if admitted(name) then
            local r = read_route(dict, name, g)
            if r == nil then return false end
            built[name] = build_route(r)
        end
    end
    for name, route in pairs(built) do
        reindex(name, routes[name], route)
        routes[name] = route
    end
    return true
end

-- Bring this worker's peers to the dict's generation: the changed services only when it has
-- the deltas since its own, else all of them.
local function sync()
    local dict = ngx.shared[DICT]
    local gen = dict:get("generation")
    if gen == local_gen then return end
    if gen == nil or not apply_deltas(dict, gen) then
        local all
        all, gen = read_routes(dict, routed_names(dict))
        if all == nil then  -- never route with nothing because the dict lost the routes
            ngx.log(ngx.ERR, "bluegreen: no routes of generation ", tostring(dict:get("generation")),
                    " in the shared dict; keeping generation ", tostring(local_gen))
            return
        end
        local fresh = {}
        for name, r in pairs(all) do fresh[name] = build_route(r) end
        routes = fresh
        index = nil  -- built again when a request needs it
    end
    local_gen = gen
    ngx.shared[STATS]:set("worker:" .. ngx.worker.id(),
                          cjson.encode({ pid = ngx.worker.pid(), generation = local_gen }))
end

-- counting ----------------------------------------------------------------------------------

-- This worker's counts not yet added to the shared dict: service -> color -> a record
-- {keys (built once: no string per request), r, e, f, b = {...}, dirty}; `dirty`: the records
-- with counts to add. Nothing here when nginx runs an include older than this file (no dict).
local counters = {}
local dirty = {}
local exiting = false     -- this worker exits: each count goes to the dict at once

local function counts_of(name, color)
    local colors = counters[name]
    if colors == nil then
        colors = {}
        counters[name] = colors
    end
    local rec = colors[color]
    if rec == nil then
        local prefix = "c|" .. name .. "|" .. color .. "|"
        rec = { kr = prefix .. "r", ke = prefix .. "e", kf = prefix .. "f", kb = {},
                r = 0, e = 0, f = 0, b = {}, dirty = false }
        for i = 1, NBUCKETS do
            rec.kb[i] = prefix .. "b" .. i
            rec.b[i] = 0
        end
        colors[color] = rec
    end
    return rec
end

local function add(figures, key, n)
    if n == 0 then return 0 end
    local _, err = figures:incr(key, n, 0)
    if err then
        ngx.log(ngx.ERR, "bluegreen: cannot count in ", FIGURES, ": ", err)
        return n  -- kept for the next flush
    end
    return 0
end

-- Add this worker's counts to the shared dict, and record when (the figures GET waits for it).
local function flush()
    local figures = ngx.shared[FIGURES]
    if not figures then return end
    local left = {}
    for _, rec in ipairs(dirty) do
        rec.r = add(figures, rec.kr, rec.r)
        rec.e = add(figures, rec.ke, rec.e)
        rec.f = add(figures, rec.kf, rec.f)
        local b, kb, rest = rec.b, rec.kb, rec.r + rec.e + rec.f
        for i = 1, NBUCKETS do
            b[i] = add(figures, kb[i], b[i])
            rest = rest + b[i]
        end
        rec.dirty = rest > 0
        if rec.dirty then left[#left + 1] = rec end
    end
    dirty = left
    if not exiting then
        ngx.update_time()
        ngx.shared[STATS]:set("flushed:" .. ngx.worker.pid(), ngx.now(), FLUSHED_TTL)
    end
end

local function counted(rec)
    if not rec.dirty then
        rec.dirty = true
        dirty[#dirty + 1] = rec
    end
    if exiting then flush() end
end

-- phases ------------------------------------------------------------------------------------

-- The text of a file, or nil and why.
local function read_file(path)
    local fh, err = io.open(path, "rb")
    if not fh then return nil, err end
    local text = fh:read("*a")
    fh:close()
    return text
end

-- Apply to `doc` (in place) the lines of the journal `path` written on the base `id`
-- (bluegreen's dynamic_state.py): each sets the services it names to exactly their servers,
-- chains and release, and removes those of "drop"; lines of another base (a rewrite that
-- stopped before emptying the journal) are skipped. A last line without its newline is a
-- write cut short (never sent to nginx): skipped. True, or nil and why.
local function replay(doc, id, path)
    local text, err = read_file(path)
    if not text then
        -- a base with an id always has a journal (bluegreen creates it first): one missing
        -- was lost, and the changes since the base with it
        if id == nil and tostring(err):find("No such file", 1, true) then return true end
        return nil, "journal " .. path .. ": " .. tostring(err)
    end
    for _, part in ipairs({ "services", "chains", "releases", "locations" }) do
        if doc[part] == nil then doc[part] = {} end
        if type(doc[part]) ~= "table" then return nil, part .. " must be an object" end
    end
    local number = 0
    for line in text:gmatch("([^\n]*)\n") do
        number = number + 1
        local entry, derr = cjson.decode(line)
        if type(entry) ~= "table" or type(entry.services) ~= "table" then
            return nil, "journal " .. path .. " line " .. number .. ": "
                .. (derr and ("not JSON: " .. tostring(derr)) or "not a bluegreen change")
        end
        if entry.base == id then
            local chains, releases = entry.chains or {}, entry.releases or {}
            local drop, locations = entry.drop or {}, entry.locations or {}
            if type(chains) ~= "table" or type(releases) ~= "table" or type(drop) ~= "table"
                    or type(locations) ~= "table" then
                return nil, "journal " .. path .. " line " .. number .. ": not a bluegreen change"
            end
            for _, name in ipairs(drop) do
                doc.services[name], doc.chains[name], doc.releases[name] = nil, nil, nil
                doc.locations[name] = nil
            end
            for name, servers in pairs(entry.services) do
                doc.services[name], doc.chains[name] = servers, chains[name]
                doc.releases[name], doc.locations[name] = releases[name], locations[name]
            end
        end
    end
    if #text > 0 and text:sub(-1) ~= "\n" then
        ngx.log(ngx.WARN, "bluegreen: skipped the last line of ", path, ", cut short")
    end
    return true
end

-- The validated routes of a state file and its journal ({services, chains, releases}), or
-- nil and why. Read again when bluegreen rewrote the base meanwhile.
local function load_state(path, journal)
    for _ = 1, 3 do
        local text, err = read_file(path)
        if not text then return nil, err end
        local doc, derr = cjson.decode(text)
        if doc == nil then
            return nil, "not JSON (" .. #text .. " bytes): " .. tostring(derr)
        end
        if type(doc) == "table" and journal then
            local id = doc.id
            doc.id = nil
            local ok, jerr = replay(doc, id, journal)
            if not ok then return nil, jerr end
        end
        if not journal or read_file(path) == text then
            local services, chains, releases, locations = check_document(doc, false)
            if not services then return nil, chains end
            return { services = services, chains = chains, releases = releases,
                     locations = locations }
        end
    end
    return nil, "rewritten while it was read, three times"
end

-- The control secret of `path`: 64 hexadecimal digits or more, or nil and why.
local function load_secret(path)
    local text, err = read_file(path)
    if not text then return nil, err end
    local value = text:match("^%s*(%x+)%s*$")
    if not value or #value < 32 then return nil, "not a bluegreen control secret" end
    return value
end

-- The preview secret of `path` (16-256 of [A-Za-z0-9._~+/=-]), or nil and why (none: no
-- file, which is not an error).
local function load_preview(path)
    if not path then return nil end
    local text, err = read_file(path)
    if not text then return nil, err end
    local value = text:match("^%s*([%w%._~%+/=%-]+)%s*$")
    if not value or #value < 16 or #value > 256 then return nil, "not a preview secret" end
    return value
end

-- init_by_lua (master, at start and at every reload): the known services, the control
-- secret, and the state last recorded by bluegreen, which wins over what a reload kept in the
-- dict. A state file that cannot be used (missing, empty, cut, not JSON, no services) is
-- logged and the last good copy is used instead; failing that, what the dict held.
-- A random epoch (hex) for the figures: from /dev/urandom, else the time and the pid.
local function new_epoch()
    local fh = io.open("/dev/urandom", "rb")
    local bytes = fh and fh:read(8)
    if fh then fh:close() end
    if bytes and #bytes == 8 then
        return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
    end
    return string.format("%x%x", ngx.time(), ngx.worker.pid())
end

-- The routes nginx starts with ({name: route}): the state file's, or its last good copy's,
-- or what the dict holds (a reload), logging what it rejected.
local function starting_routes(opts, dict)
    local names = routed_names(dict)
    local prev = read_routes(dict, names) or legacy_routes(dict, names) or {}
    -- what is worth an error: with upstreams per service, any rejection while some are
    -- configured; with the routing table, any but a fresh nginx's (nothing served, no files)
    local function worth_saying(err)
        if not table_mode then return next(known) ~= nil end
        return next(prev) ~= nil or not tostring(err):find("No such file", 1, true)
            or (opts.last_good_file ~= nil and read_file(opts.last_good_file) ~= nil)
    end
    local loaded, err = load_state(opts.state_file, opts.journal_file)
    local used = opts.state_file
    if not loaded and worth_saying(err) then
        ngx.log(ngx.ERR, "bluegreen: rejected the state file ", opts.state_file, ": ",
                tostring(err), "; trying its last good copy ", opts.last_good_file)
    end
    if not loaded and opts.last_good_file then
        loaded, err = load_state(opts.last_good_file, opts.last_good_journal_file)
        used = opts.last_good_file
        if not loaded and worth_saying(err) then
            ngx.log(ngx.ERR, "bluegreen: rejected the last good copy ", opts.last_good_file,
                    ": ", tostring(err), "; keeping the routes in memory")
        end
    end
    local services, chains, releases, locations
    if not loaded then
        -- keep what this nginx already served (a reload), never an empty set for a known one
        services, chains, releases, locations = {}, {}, {}, {}
        for name, r in pairs(prev) do
            if admitted(name) then
                services[name] = r.servers
                if endpoints[name] then chains[name] = r.chains end
                releases[name] = r.release
                if table_mode then locations[name] = r.location end
            end
        end
    else
        services, chains, releases = loaded.services, loaded.chains, loaded.releases
        locations = loaded.locations
    end
    if loaded and used ~= opts.state_file then
        ngx.log(ngx.WARN, "bluegreen: routes restored from ", used)
    end
    local good = nil
    -- a service the state file lost: its last good routes (with the routing table, which has
    -- no list of services of its own, a state file that can be read is the whole truth)
    for name in pairs(known) do
        if not services[name] and used == opts.state_file and opts.last_good_file then
            if good == nil then
                good = load_state(opts.last_good_file, opts.last_good_journal_file)
                    or { services = {}, chains = {}, releases = {}, locations = {} }
            end
            if good.services[name] then
                services[name], chains[name] = good.services[name], good.chains[name]
                releases[name], locations[name] = good.releases[name], good.locations[name]
                ngx.log(ngx.WARN, "bluegreen: the state file has no servers for ", name,
                        "; restored from ", opts.last_good_file)
            end
        end
        if not services[name] then
            ngx.log(ngx.ERR, "bluegreen: no recorded servers for ", name, "; it answers 502")
        end
    end
    local changes = {}
    for name, servers in pairs(services) do
        changes[name] = { servers = servers, chains = chains[name], release = releases[name],
                          location = locations[name] }
    end
    return changes
end

-- A test's hold point (tests/integration/test_nginx_dynamic_hardening.py): with the file
-- <state>.test-hold-init present, nginx's init writes <state>.test-held-init and waits until
-- the hold file is gone (30 s at most), between reading the routes and storing them.
local function test_hold(state_file)
    local hold = state_file .. ".test-hold-init"
    if not read_file(hold) then return end
    local fh = io.open(state_file .. ".test-held-init", "w")
    if fh then fh:close() end
    local ffi = require("ffi")
    pcall(ffi.cdef, "int usleep(unsigned int usec);")
    for _ = 1, 15000 do
        if not read_file(hold) then return end
        ffi.C.usleep(2000)
    end
end

function M.init(opts)
    local figures = ngx.shared[FIGURES]
    if figures and figures:get("epoch") == nil then
        local ok, ferr = figures:safe_set("epoch", new_epoch())
        if not ok then error("bluegreen: shared dict " .. FIGURES .. ": " .. tostring(ferr)) end
    end
    known, endpoints, table_mode = {}, {}, opts.table == true
    for _, name in ipairs(opts.services) do known[name] = true end
    for _, name in ipairs(opts.endpoints or {}) do endpoints[name] = true end
    local serr
    secret, serr = load_secret(opts.secret_file)
    if not secret then
        ngx.log(ngx.ERR, "bluegreen: no control secret in ", opts.secret_file, " (", serr,
                "): the control endpoint refuses every request")
    end
    local perr
    preview, perr = load_preview(opts.preview_file)
    preview_token = nil
    if preview then
        preview_token = (ngx.hmac_sha1(preview, "bluegreen-preview"):gsub(".", function(c)
            return string.format("%02x", c:byte())
        end))
    elseif perr and not tostring(perr):find("No such file", 1, true) then
        ngx.log(ngx.ERR, "bluegreen: no preview secret in ", opts.preview_file, " (", perr, ")")
    end
    -- The master reads the state file, then stores its routes as a full generation; a POST
    -- to a worker of the old configuration in between (its journal line written first) would
    -- be overwritten: the routes are stored only when the dict's generation is still the one
    -- seen before reading, else read again (the file has that change by then).
    local dict = ngx.shared[DICT]
    for _ = 1, 50 do
        local seen = dict:get("generation")
        local changes = starting_routes(opts, dict)
        test_hold(opts.state_file)
        if dict:safe_add("lock", true, 10) then
            if dict:get("generation") == seen then
                local ok, perr = store(dict, (seen or 0) + 1, changes, true)
                dict:delete("lock")
                if not ok then error("bluegreen: " .. perr) end
                return
            end
            dict:delete("lock")
        end
        ngx.log(ngx.WARN, "bluegreen: routes changed while nginx read them; reading them again")
    end
    error("bluegreen: the routes kept changing while nginx loaded them")
end

function M.init_worker()
    local fh = io.open("/dev/urandom", "rb")  -- each worker its own buckets' sequence
    local bytes = fh and fh:read(4)
    if fh then fh:close() end
    local seed = ngx.now() * 1000 + ngx.worker.pid()
    if bytes and #bytes == 4 then
        seed = bytes:byte(1) * 16777216 + bytes:byte(2) * 65536 + bytes:byte(3) * 256 + bytes:byte(4)
    end
    math.randomseed(seed)
    sync()
    local ok, err = ngx.timer.every(1, function(premature)
        if not premature then sync() end
    end)
    if not ok then ngx.log(ngx.ERR, "bluegreen: cannot start the sync timer: ", err) end
    has_figures = ngx.shared[FIGURES] ~= nil
    if not has_figures then return end
    flush()  -- this worker's first "flushed:<pid>"
    ok, err = ngx.timer.every(FLUSH_INTERVAL, function(premature)
        if premature then exiting = true end  -- the worker exits: the last batch, then at once
        flush()
    end)
    if not ok then ngx.log(ngx.ERR, "bluegreen: cannot start the counts' flush timer: ", err) end
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

-- The same string, compared in a time that does not depend on where they differ.
local function same(given, expected)
    if type(given) ~= "string" then return false end
    local diff = bit.bxor(#given, #expected)
    for i = 1, #expected do
        diff = bit.bor(diff, bit.bxor(given:byte(i) or 0, expected:byte(i)))
    end
    return diff == 0
end

-- Whether this request asks for a preview with the right secret (header, cookie, or the
-- preview URL, whose response then sets the cookie; the header as M.rewrite found it, which
-- took it out, in a location that runs it).
local function previewing(ctx)
    if preview == nil then return false end
    if ctx.bluegreen_preview_header then return true end
    if same(ngx.var.http_x_bluegreen_preview, preview) then return true end
    local cookie = ngx.var.cookie_bg_preview
    if cookie and same(cookie, preview_token) then return true end
    local arg = ngx.var["arg_bluegreen-preview"]
    if arg and same(ngx.unescape_uri(arg), preview) then
        ctx.bluegreen_set_preview = true
        return true
    end
    return false
end

-- A bucket cookie's value as a number 0-99, or nil (absent, or anything but "0".."99").
local function bucket_of(value)
    if type(value) ~= "string" or not value:match("^[1-9]?%d$") then return nil end
    return tonumber(value)
end

-- Which side of a release serves this request ("new", "old", or false: the weights), decided
-- once per request (the balancer runs again for a retry).
local function release_side(rel, ctx)
    local side = ctx.bluegreen_side
    if side ~= nil then return side end
    side = false
    if previewing(ctx) then
        side = "new"
    elseif rel.sticky and rel.weight > 0 then
        local b = bucket_of(ngx.var.cookie_bg_bucket)
        if b == nil then
            b = math.random(0, 99)
            ctx.bluegreen_new_bucket = b  -- set on the response (header_filter)
        end
        side = b < rel.weight and "new" or "old"
    end
    ctx.bluegreen_side = side
    return side
end

-- balancer_by_lua of the upstream of `name` (`internal`: of its internal endpoint, where a
-- caller of a chain is kept on that chain's servers). Without a peer set here, nginx falls
-- back to the upstream's only server, marked down: 502 "no live upstreams".
function M.balance(name, internal)
    sync()
    local route = routes[name]
    local peers = route and route.peers
    local chained = false
    local ctx = ngx.ctx
    if route and internal then
        local side = route.callers[ngx.var.remote_addr]
        if side then peers, chained = route.sides[side], true end
    end
    if route and route.release and not chained then
        local side = release_side(route.release, ctx)
        if side == "new" then peers = route.release.new_peers
        elseif side == "old" then peers = route.release.old_peers end
    end
    if not peers or #peers == 0 then
        ngx.log(ngx.ERR, "bluegreen: no servers for ", name)
        return
    end
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
    local dict = ngx.shared[STATS]
    if ctx.bluegreen_peer then
        dict:incr("active:" .. ctx.bluegreen_peer, -1, 0)
        local rec = ctx.bluegreen_counts
        if rec then  -- a retry: the previous try failed
            rec.f = rec.f + 1
            counted(rec)
        end
    end
    dict:incr("active:" .. peer.key, 1, 0)
    ctx.bluegreen_peer = peer.key
    -- none: a server of no color, or an include older than this file (no counts dict)
    ctx.bluegreen_counts = peer.color and has_figures and counts_of(name, peer.color) or nil
end

-- access_by_lua of the routing table's `location /`: the service whose location is the
-- longest prefix of $uri (nginx's choice among prefix locations), kept for the balancer. A
-- URI that is a location without its trailing slash is redirected there (301, the query
-- kept), as nginx does for a prefix location ending in "/" that proxies; no location: 404.
function M.route()
    sync()
    if index == nil then build_index() end
    local uri = ngx.var.uri
    local n = #uri
    local name = index[uri]
    if name == nil and uri:byte(n) ~= 47 and index[uri .. "/"] then
        -- as nginx writes its own (absolute_redirect, port_in_redirect on; the request's host)
        local var = ngx.var
        local scheme, port, args = var.scheme, var.server_port, var.args
        local default = scheme == "https" and "443" or "80"
        ngx.header["Location"] = scheme .. "://" .. var.host
            .. (port ~= default and (":" .. port) or "") .. uri .. "/"
            .. (args and args ~= "" and ("?" .. args) or "")
        return ngx.exit(301)
    end
    if name == nil then
        for _, len in ipairs(lengths) do
            if len < n then
                name = index[uri:sub(1, len)]
                if name then break end
            end
        end
    end
    if name == nil then return ngx.exit(404) end
    ngx.ctx.bluegreen_service = name
end

-- balancer_by_lua of the routing table's upstream: the service M.route() chose.
function M.balance_table()
    local name = ngx.ctx.bluegreen_service
    if name == nil then
        ngx.log(ngx.ERR, "bluegreen: no service chosen for this request (M.route not run)")
        return
    end
    return M.balance(name)
end

-- The last of a list of upstream values ("0.004, 0.012" or "- : 0.010").
local function last_value(v)
    if v == nil then return nil end
    return v:match("([^%s,:]+)%s*$")
end

-- Count the request that ended on a peer of the color of `ctx.bluegreen_counts` (log phase),
-- in this worker's table; each nginx variable read once, the response time only when needed.
local function count_request(ctx)
    local rec = ctx.bluegreen_counts
    if not rec then return end
    local status = ngx.status
    rec.r = rec.r + 1
    if status >= 500 then rec.e = rec.e + 1 end
    local var = ngx.var
    local header_time = var.upstream_header_time
    if tonumber(header_time) == nil then  -- several tries ("0.004, 0.012"), or none ("-")
        local last = last_value(header_time)
        if last == nil or last == "-" then
            if status ~= 499 then rec.f = rec.f + 1 end  -- 499: the client left
            return counted(rec)
        end
    end
    local response_time = var.upstream_response_time
    local ms = (tonumber(response_time) or tonumber(last_value(response_time)) or 0) * 1000
    local i = 1
    while i < NBUCKETS and ms > LATENCY_MS[i] do i = i + 1 end
    rec.b[i] = rec.b[i] + 1
    counted(rec)
end

-- rewrite_by_lua (http level): the preview secret never reaches a backend. The header's
-- verdict is kept for the balancer and the header taken out; the preview URL answers 302 to
-- the same URL without the secret, setting the preview cookie (a wrong secret is taken out
-- of the URL too). (A location with a rewrite_by_lua of its own does not run this.)
function M.rewrite()
    if preview == nil then return end
    local var = ngx.var
    if var.http_x_bluegreen_preview ~= nil then
        ngx.ctx.bluegreen_preview_header = same(var.http_x_bluegreen_preview, preview)
        ngx.req.clear_header("X-Bluegreen-Preview")
    end
    local arg = var["arg_bluegreen-preview"]
    if arg == nil then return end
    local args = ngx.req.get_uri_args(0)  -- all of them (0: no limit)
    args["bluegreen-preview"] = nil
    if not same(ngx.unescape_uri(arg), preview) then
        return ngx.req.set_uri_args(args)
    end
    local query = ngx.encode_args(args)
    local path = var.request_uri:match("^[^?]*")
    ngx.header["Set-Cookie"] = PREVIEW_COOKIE .. "=" .. preview_token .. COOKIE_ATTRIBUTES
    ngx.header["Cache-Control"] = "no-store"
    return ngx.redirect(path .. (query ~= "" and ("?" .. query) or ""), 302)
end

-- header_filter_by_lua (http level): a client given a bucket gets its cookie.
function M.header_filter()
    local ctx = ngx.ctx
    local b = ctx.bluegreen_new_bucket
    if b == nil and not ctx.bluegreen_set_preview then return end
    local cookies = {}
    local existing = ngx.header["Set-Cookie"]
    if type(existing) == "table" then
        for _, c in ipairs(existing) do cookies[#cookies + 1] = c end
    elseif existing then
        cookies[1] = existing
    end
    if b ~= nil then
        cookies[#cookies + 1] = BUCKET_COOKIE .. "=" .. string.format("%d", b) .. COOKIE_ATTRIBUTES
    end
    if ctx.bluegreen_set_preview then
        cookies[#cookies + 1] = PREVIEW_COOKIE .. "=" .. preview_token .. COOKIE_ATTRIBUTES
    end
    ngx.header["Set-Cookie"] = cookies
end

-- log_by_lua (http level): the request no longer uses its peer; it is counted.
function M.log()
    local ctx = ngx.ctx
    local key = ctx.bluegreen_peer
    if key then
        ngx.shared[STATS]:incr("active:" .. key, -1, 0)
        ctx.bluegreen_peer = nil
        count_request(ctx)
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

-- The routes of the set `names` as the control endpoint shows them: generation, services,
-- chains, releases; nil when the dict holds no routes readable now.
local function routes_view(dict, names)
    local all, gen = read_routes(dict, names)
    if all == nil then
        if dict:get("generation") ~= nil then return nil end
        all, gen = {}, 0
    end
    local services, chains, releases, locations = {}, {}, {}, {}
    for name, r in pairs(all) do
        services[name], chains[name], releases[name] = r.servers, r.chains, r.release
        locations[name] = r.location
    end
    return { generation = gen, services = services, chains = chains, releases = releases,
             locations = locations }
end

local function workers_view()
    local stats = ngx.shared[STATS]
    local workers = {}
    for id = 0, ngx.worker.count() - 1 do
        local w = cjson.decode(stats:get("worker:" .. id) or "{}")
        workers[#workers + 1] = { id = id, pid = w and w.pid or cjson.null,
                                  generation = w and w.generation or cjson.null }
    end
    return workers
end

-- Everything: the routes of every service, the known services and endpoints, the workers'
-- generations, the requests in flight.
local function snapshot()
    local stats = ngx.shared[STATS]
    local dict = ngx.shared[DICT]
    local view = routes_view(dict, routed_names(dict))
    if view == nil then return nil end
    local names, with_endpoint = {}, {}
    for name in pairs(known) do names[#names + 1] = name end
    for name in pairs(endpoints) do with_endpoint[#with_endpoint + 1] = name end
    table.sort(names)
    table.sort(with_endpoint)
    local active = {}
    for _, key in ipairs(stats:get_keys(0)) do
        if key:sub(1, 7) == "active:" then
            local n = stats:get(key)
            if n and n > 0 then active[key:sub(8)] = n end
        end
    end
    view.known, view.endpoints, view.workers, view.active = names, with_endpoint, workers_view(),
        active
    return view
end

-- The set of services a "services" query names ("a,b,c": each a known service, once), or nil
-- and why.
local function queried_services(value)
    if type(value) ~= "string" or value == "" then
        return nil, "services must be one list of names separated by commas"
    end
    local names, n = {}, 0
    for name in (value .. ","):gmatch("([^,]*),") do
        if not is_service_name(name) then
            return nil, "invalid service name " .. cjson.encode(name)
        end
        if not admitted(name) then
            return nil, "unknown service " .. name .. " (no upstream for it in this nginx)"
        end
        if names[name] then return nil, "service " .. name .. " named twice" end
        names[name], n = true, n + 1
    end
    return names
end

-- Wait until every current worker (the pids of "worker:<id>") has flushed its counts after
-- now, FLUSH_WAIT at most; this worker's own counts go to the dict at once.
local function await_flushes()
    local stats = ngx.shared[STATS]
    ngx.update_time()
    local start = ngx.now()
    flush()
    local me = ngx.worker.pid()
    local deadline = start + FLUSH_WAIT
    for id = 0, ngx.worker.count() - 1 do
        local w = cjson.decode(stats:get("worker:" .. id) or "{}")
        local pid = type(w) == "table" and w.pid
        if pid and pid ~= me then
            local key = "flushed:" .. string.format("%d", pid)
            while (stats:get(key) or 0) <= start and ngx.now() < deadline do
                ngx.sleep(0.01)
            end
        end
    end
end

-- What is counted: {"epoch", "bounds": LATENCY_MS, "figures": {service: {color: {"requests",
-- "errors", "failures", "buckets": [...]}}}}, with every request logged before the GET.
local function figures_view()
    local figures = ngx.shared[FIGURES]
    local out = {}
    if not figures then
        return { epoch = cjson.null, bounds = LATENCY_MS, figures = out }
    end
    await_flushes()
    for _, key in ipairs(figures:get_keys(0)) do
        local name, color, field = key:match("^c|([^|]+)|(%a+)|(%w+)$")
        if name then
            local colors = out[name] or {}
            out[name] = colors
            local c = colors[color]
            if not c then
                c = { requests = 0, errors = 0, failures = 0, buckets = {} }
                for i = 1, #LATENCY_MS + 1 do c.buckets[i] = 0 end
                colors[color] = c
            end
            local n = figures:get(key) or 0
            if field == "r" then c.requests = n
            elseif field == "e" then c.errors = n
            elseif field == "f" then c.failures = n
            else
                local i = tonumber(field:sub(2))
                if i and c.buckets[i] then c.buckets[i] = n end
            end
        end
    end
    return { epoch = figures:get("epoch") or cjson.null, bounds = LATENCY_MS, figures = out }
end

-- A number as JSON writes it (no hex, no leading zero or plus, digits on both sides of '.').
local function is_json_number(t)
    local rest = t:match("^%-?0(.*)$") or t:match("^%-?[1-9]%d*(.*)$")
    if rest == nil then return false end
    rest = rest:gsub("^%.%d+", "", 1)
    rest = rest:gsub("^[eE][%+%-]?%d+", "", 1)
    return rest == ""
end

-- Every number of a JSON text (outside its strings) is one JSON allows; cjson alone reads
-- 80. or .5 as numbers. Nil and why otherwise.
local function strict_numbers(body)
    local i, n = 1, #body
    while i <= n do
        local c = body:byte(i)
        if c == 34 then  -- a string: to its closing quote, over escapes
            i = i + 1
            while true do
                local j = body:find('["\\]', i)
                if j == nil then return nil, "unterminated string" end
                if body:byte(j) == 92 then
                    i = j + 2
                else
                    i = j + 1
                    break
                end
            end
        elseif (c >= 48 and c <= 57) or c == 45 or c == 43 or c == 46 then
            local _, e = body:find("^[%w%.%+%-]+", i)
            local token = body:sub(i, e)
            if not is_json_number(token) then return nil, "not a JSON number: " .. token end
            i = e + 1
        else
            i = i + 1
        end
    end
    return true
end

local function post()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then return respond(400, { error = "empty body (or larger than the buffer)" }) end
    local strict, serr = strict_numbers(body)
    if not strict then return respond(400, { error = "malformed JSON: " .. serr }) end
    local doc, derr = cjson.decode(body)
    if doc == nil then return respond(400, { error = "malformed JSON: " .. tostring(derr) }) end
    local services, chains, releases, locations = check_document(doc, true)
    if not services then return respond(400, { error = chains }) end
    local dict = ngx.shared[DICT]
    local clash = nil
    local gen, err = with_lock(dict, function()
        local current = dict:get("generation")
        if current == nil then return nil, "the shared dict holds no routes: reload nginx" end
        if table_mode then  -- a location held by a service this change leaves as it is
            sync()
            if index == nil then build_index() end
            for name, loc in pairs(locations) do
                local other = index[loc]
                if other and other ~= name and not services[other] then
                    clash = "location " .. loc .. " is " .. other .. "'s"
                    return nil, clash
                end
            end
        end
        local changes = {}  -- a service posted: exactly its servers, chains, release, location
        for name, servers in pairs(services) do
            changes[name] = { servers = servers, chains = chains[name], release = releases[name],
                              location = locations[name] }
        end
        local ok, serr = store(dict, current + 1, changes)
        if not ok then return nil, serr end  -- the routes of `current` are still there
        return current + 1
    end)
    if not gen then return respond(clash and 409 or 507, { error = err }) end
    sync()
    -- what the dict holds for the posted services now, read back (bluegreen compares it with
    -- what it posted: a route evicted or not stored would show here)
    local names = {}
    for name in pairs(services) do names[name] = true end
    return respond(200, { generation = gen, services = services, chains = chains,
                          releases = releases, locations = locations,
                          served = routes_view(dict, names) or cjson.null })
end

-- content_by_lua of the control location: GET what is served, POST new routes; only for
-- requests with the secret, without an Origin header (a browser's), a POST in JSON.
function M.control()
    if ngx.var.http_origin ~= nil then
        return respond(403, { error = "a request with an Origin header is refused" })
    end
    if secret == nil then
        return respond(503, { error = "nginx has no control secret: reload it once bluegreen "
                                      .. "has written its secret file" })
    end
    if not same(ngx.req.get_headers()[SECRET_HEADER], secret) then
        return respond(403, { error = "missing or wrong " .. SECRET_HEADER })
    end
    local method = ngx.req.get_method()
    local ctype = ngx.var.content_type
    if method == "POST" and not (ctype and (ctype:lower() == "application/json"
            or ctype:lower():match("^application/json%s*;") ~= nil)) then
        return respond(415, { error = "the body must be application/json" })
    end
    if method == "GET" then
        local args, aerr = ngx.req.get_uri_args(3)
        if aerr == "truncated" then return respond(400, { error = "too many query arguments" }) end
        for k in pairs(args) do
            if k ~= "view" and k ~= "services" then
                return respond(400, { error = "unknown query argument " .. cjson.encode(tostring(k)) })
            end
        end
        local view = args.view
        if view == "figures" and args.services == nil then return respond(200, figures_view()) end
        if view ~= nil then return respond(400, { error = "view must be figures (alone)" }) end
        sync()
        local body
        if args.services ~= nil then  -- the read-back of a change: its services and the workers
            local names, nerr = queried_services(args.services)
            if not names then return respond(400, { error = nerr }) end
            body = routes_view(ngx.shared[DICT], names)
            if body then body.workers = workers_view() end
        else
            body = snapshot()
        end
        if body == nil then
            return respond(503, { error = "the routes changed while they were read: read again" })
        end
        return respond(200, body)
    elseif method == "POST" then
        return post()
    end
    ngx.header["Allow"] = "GET, POST"
    return respond(405, { error = "use GET or POST" })
end

return M
