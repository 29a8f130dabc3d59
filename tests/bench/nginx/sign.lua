-- The nginx peer of the jwt filter (BENCHMARKS.md, issue 11's peers): signs
-- every POST with the same HS512 token (iat, jti, payload.user, payload.date)
-- in x-my-jwt, replacing any the client sent, with OpenSSL's HMAC through
-- LuaJIT's FFI, the way lua-resty-hmac does it. Loaded by nginx-lua.conf;
-- the key comes from the environment variable JWT_SECRET (nginx `env`).
-- nginx-job.conf adds the filter's other per-request work (sign_and_count,
-- log_line).
local ffi = require "ffi"
local C = ffi.C
local crypto = ffi.load("crypto")

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha512(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);
int RAND_bytes(unsigned char *buf, int num);
]]

local _M = {}

local key = os.getenv("JWT_SECRET") or ""
local md = ffi.new("unsigned char[64]")
local md_len = ffi.new("unsigned int[1]")
local nonce = ffi.new("unsigned char[16]")
local sha512 = crypto.EVP_sha512()

local function b64url(s)
  return (ngx.encode_base64(s):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

local header = b64url('{"alg":"HS512","typ":"JWT"}') .. "."

function _M.sign()
  if ngx.req.get_method() ~= "POST" then
    ngx.req.clear_header("x-my-jwt")
    return
  end
  if crypto.RAND_bytes(nonce, 16) ~= 1 then
    return ngx.exit(500)
  end
  local jti = ffi.string(nonce, 16):gsub(".", function(c)
    return string.format("%02x", c:byte())
  end)
  local iat = ngx.time()
  local claims = '{"iat":' .. iat .. ',"jti":"' .. jti
    .. '","payload":{"user":"username","date":"' .. os.date("!%Y-%m-%d", iat) .. '"}}'
  local signing_input = header .. b64url(claims)
  crypto.HMAC(sha512, key, #key, signing_input, #signing_input, md, md_len)
  ngx.req.set_header("x-my-jwt", signing_input .. "." .. b64url(ffi.string(md, md_len[0])))
  return jti
end

-- The rest of the filter's job (nginx-job.conf): the counts /status shows,
-- host-wide, and the jti kept for the log line.
function _M.sign_and_count()
  local jti = _M.sign()
  local counts = ngx.shared.jwt_counts
  counts:incr("processed", 1, 0)
  if jti then
    counts:incr("signed", 1, 0)
    ngx.ctx.jti = jti
  end
end

-- One line per request, as the filter logs it: METHOD PATH STATUS jti=JTI 1.234ms.
function _M.log_line()
  ngx.log(ngx.NOTICE, ngx.req.get_method(), " ", ngx.var.uri, " ", ngx.status,
    " jti=", ngx.ctx.jti or "-", " ",
    string.format("%.3fms", (ngx.now() - ngx.req.start_time()) * 1000))
end

return _M
