//! The proxy-wasm ABI 0.2.1 vocabulary: status codes and the enums host functions take.
//!
//! Values mirror the specification (and `proxy-wasm` SDK 0.2.5's `types.rs`). Host functions
//! return a [`Status`] for every *expected* outcome; only host bugs and bad guest pointers become
//! traps (an `Err` from the host function).

/// Result code of every `proxy_*` host function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// The call succeeded.
    Ok = 0,
    /// The requested item (header, key, metric, queue, ...) does not exist.
    NotFound = 1,
    /// An argument is out of range or malformed.
    BadArgument = 2,
    /// A value could not be serialized.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// The queue is empty.
    Empty = 7,
    /// Compare-and-swap on shared data failed: the value changed since it was read.
    CasMismatch = 8,
    /// The host failed internally.
    InternalFailure = 10,
    /// The host does not implement this call. Never returned to SDK 0.2.5 modules, which
    /// panic on it; kept to mirror the specification.
    Unimplemented = 12,
}

impl Status {
    /// The ABI value, as returned to the guest.
    #[must_use]
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// Log level of `proxy_log` and `proxy_get_log_level`, ordered from most to least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Level {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
    /// Critical.
    Critical = 5,
}

impl Level {
    /// The level with ABI value `v`, if any.
    #[must_use]
    pub const fn from_abi(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    /// Lowercase name, as printed in log lines (`info`, `warn`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            "critical" => Self::Critical,
            _ => return Err(format!("unknown log level \"{s}\"")),
        })
    }
}

/// What a filter callback tells the host to do with the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Go on with the next filter / forward the data.
    Continue,
    /// Stop iteration until the filter resumes the stream (or sent a local reply).
    Pause,
}

impl Action {
    /// Decodes a callback's return value; anything other than 1 continues, as in Envoy.
    #[must_use]
    pub const fn from_abi(v: u32) -> Self {
        if v == 1 { Self::Pause } else { Self::Continue }
    }
}

/// The header maps of `proxy_*_header_map_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    /// Request headers (with `:method`, `:path`, `:authority`, `:scheme`).
    RequestHeaders,
    /// Request trailers.
    RequestTrailers,
    /// Response headers (with `:status`).
    ResponseHeaders,
    /// Response trailers.
    ResponseTrailers,
    /// gRPC initial metadata (while `proxy_on_grpc_receive_initial_metadata` runs).
    GrpcReceiveInitialMetadata,
    /// gRPC trailing metadata (while `proxy_on_grpc_receive_trailing_metadata` runs).
    GrpcReceiveTrailingMetadata,
    /// HTTP call response headers (not supported).
    HttpCallResponseHeaders,
    /// HTTP call response trailers (not supported).
    HttpCallResponseTrailers,
}

impl MapType {
    /// The map type with ABI value `v`, if any.
    #[must_use]
    pub const fn from_abi(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// The buffers of `proxy_get_buffer_bytes` / `proxy_set_buffer_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// The current request body chunk (accumulated while the filter pauses).
    RequestBody,
    /// The current response body chunk.
    ResponseBody,
    /// Network filter data (not supported).
    DownstreamData,
    /// Network filter data (not supported).
    UpstreamData,
    /// HTTP call response body (not supported).
    HttpCallResponseBody,
    /// gRPC receive buffer (while `proxy_on_grpc_receive` runs).
    GrpcReceiveBuffer,
    /// `vm_config.configuration`.
    VmConfiguration,
    /// The plugin configuration.
    PluginConfiguration,
    /// Foreign function call data (not supported).
    CallData,
}

impl BufferType {
    /// The buffer type with ABI value `v`, if any.
    #[must_use]
    pub const fn from_abi(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::RequestBody,
            1 => Self::ResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            _ => return None,
        })
    }
}

/// Streams of `proxy_continue_stream` / `proxy_close_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// The HTTP request.
    HttpRequest,
    /// The HTTP response.
    HttpResponse,
    /// Network filter downstream (accepted, no effect).
    Downstream,
    /// Network filter upstream (accepted, no effect).
    Upstream,
}

impl StreamType {
    /// The stream type with ABI value `v`, if any.
    #[must_use]
    pub const fn from_abi(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::HttpRequest,
            1 => Self::HttpResponse,
            2 => Self::Downstream,
            3 => Self::Upstream,
            _ => return None,
        })
    }
}

/// Metric kinds of `proxy_define_metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (write-only for the guest, as in Envoy).
    Histogram,
}

impl MetricType {
    /// The metric type with ABI value `v`, if any.
    #[must_use]
    pub const fn from_abi(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }
}
