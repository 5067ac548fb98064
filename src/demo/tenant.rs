//! An embedded tenant server for the demo: just enough of a Postgres server
//! to show that each session reaches its own tenant, end to end encrypted.
//!
//! It does what a tenant's real Postgres does at the start of a session:
//! answers `SSLRequest` with `S`, completes the TLS handshake with its own
//! certificate (rustls), reads the StartupMessage, and lets the user in
//! (trust), announcing itself with the usual ParameterStatus messages. It
//! then answers a handful of queries, over the simple protocol (psql) and
//! the extended one (tokio-postgres's `query`):
//!
//! - `SELECT 1`, `SELECT current_database()`, `SELECT current_user`,
//!   `SELECT version()`;
//! - `SHOW tenant` and `SHOW cluster_name` (the tenant's name),
//!   `SHOW server_version`.
//!
//! Anything else gets an error saying so. Every message is framed by
//! pgwire's message layer, the same encoder and decoder that pgsni's own
//! start-up replies use.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use pgwire::error::PgWireError;
use pgwire::messages::data::{
    DataRow, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ErrorResponse, GssEncResponse, ReadyForQuery, SslResponse,
    TransactionStatus,
};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey, Startup,
};
use pgwire::messages::{
    DecodeContext, PgWireBackendMessage as Backend, PgWireFrontendMessage as Frontend,
    ProtocolVersion, SslNegotiationMetaMessage as Negotiation,
};
use rustls::crypto::SecureRandom;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

/// What the tenant reports as `server_version`.
pub const SERVER_VERSION: &str = "15.0 (pgsni demo)";
/// Bound on a session's start-up (SSLRequest, TLS handshake,
/// StartupMessage), so that a silent client does not hold a task forever.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLSTATE `08P01` protocol_violation.
const PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE `28000` invalid_authorization_specification.
const INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE `0A000` feature_not_supported.
const NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE `26000` invalid_sql_statement_name.
const NO_SUCH_STATEMENT: &str = "26000";
/// SQLSTATE `34000` invalid_cursor_name.
const NO_SUCH_PORTAL: &str = "34000";

/// Why a tenant could not be set up.
#[derive(Debug, Error)]
pub enum TenantError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate or key.
    #[error("cannot use the tenant's certificate and key: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why one session ended early. Logged, never fatal to the tenant.
#[derive(Debug, Error)]
enum SessionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(#[from] PgWireError),
    #[error("start-up timed out")]
    Timeout,
}

/// One embedded tenant: a name and a TLS identity.
pub struct Tenant {
    name: String,
    acceptor: TlsAcceptor,
    random: &'static dyn SecureRandom,
    next_pid: AtomicI32,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    /// A tenant called `name` presenting the certificate chain in `cert`
    /// (PEM, leaf first) with the private key in `key` (PEM).
    pub fn new(name: &str, cert: &Path, key: &Path) -> Result<Self, TenantError> {
        let pem_error = |path: &Path| {
            let path = path.to_owned();
            move |source| TenantError::Pem { path, source }
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(pem_error(cert))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let random = provider.secure_random;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // What PostgreSQL 17+ offers: direct-TLS clients insist on it, and
        // clients that send no ALPN are unaffected.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self {
            name: name.to_owned(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            random,
            next_pid: AtomicI32::new(1000),
        })
    }

    /// The tenant's name, as `SHOW tenant` reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Accepts sessions on `listener` until the task is dropped, one task
    /// per session.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: wait for some to free up.
                    debug!(tenant = %self.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let tenant = self.clone();
            sessions.spawn(async move {
                if let Err(error) = tenant.session(stream, peer).await {
                    debug!(tenant = %tenant.name, %peer, %error, "demo session ended");
                }
            });
            // Reap finished sessions so that the set does not grow.
            while sessions.try_join_next().is_some() {}
        }
    }

    async fn session(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), SessionError> {
        let started = tokio::time::timeout(STARTUP_TIMEOUT, self.start_up(stream));
        let Some((mut conn, session)) = started.await.map_err(|_| SessionError::Timeout)?? else {
            return Ok(());
        };
        debug!(tenant = %self.name, %peer, user = %session.user, "demo session started");
        session.run(&mut conn).await?;
        // close_notify, then FIN.
        conn.stream.shutdown().await?;
        Ok(())
    }

    /// From the first plaintext byte to ReadyForQuery; `None` when the
    /// client went away or was refused.
    async fn start_up(
        &self,
        stream: TcpStream,
    ) -> Result<Option<(TlsConn, Session<'_>)>, SessionError> {
        let mut plain = Conn::new(stream, DecodeContext::new(ProtocolVersion::PROTOCOL3_0));
        loop {
            let Some(message) = plain.recv().await? else {
                return Ok(None);
            };
            match message {
                Frontend::SslNegotiation(Negotiation::PostgresSsl(_)) => {
                    break;
                }
                Frontend::SslNegotiation(Negotiation::PostgresGss(_)) => {
                    // No GSSAPI here; the client goes on with SSLRequest.
                    plain.send(Backend::GssEncResponse(GssEncResponse::Refuse))?;
                    plain.flush().await?;
                }
                Frontend::SslNegotiation(Negotiation::None) => {
                    // A StartupMessage or a CancelRequest: decode it as such.
                    plain.context.awaiting_frontend_ssl = false;
                }
                Frontend::CancelRequest(_) => {
                    // Queries here finish at once: there is never anything to cancel.
                    return Ok(None);
                }
                _ => {
                    plain.fatal(
                        INVALID_AUTHORIZATION,
                        "the demo tenant accepts only TLS connections",
                    )?;
                    plain.flush().await?;
                    return Ok(None);
                }
            }
        }
        if !plain.read_buf.is_empty() {
            // Bytes sent in the clear behind the SSLRequest could have been
            // injected by anyone on the path (CVE-2021-23214).
            plain.fatal(
                PROTOCOL_VIOLATION,
                "received unencrypted data after SSL request",
            )?;
            plain.flush().await?;
            return Ok(None);
        }
        plain.send(Backend::SslResponse(SslResponse::Accept))?;
        plain.flush().await?;

        let tls = self.acceptor.accept(plain.stream).await?;
        let mut context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        context.awaiting_frontend_ssl = false;
        let mut conn = Conn::new(tls, context);
        let startup = match conn.recv().await? {
            Some(Frontend::Startup(startup)) => startup,
            // An encrypted CancelRequest (libpq 17+): nothing to cancel either.
            Some(Frontend::CancelRequest(_)) | None => return Ok(None),
            Some(_) => {
                conn.fatal(PROTOCOL_VIOLATION, "expected a StartupMessage")?;
                conn.flush().await?;
                return Ok(None);
            }
        };
        conn.context.awaiting_frontend_startup = false;
        let Some(user) = startup.parameters.get("user").cloned() else {
            conn.fatal(
                INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )?;
            conn.flush().await?;
            return Ok(None);
        };
        let database = startup
            .parameters
            .get("database")
            .cloned()
            .unwrap_or_else(|| user.clone());
        let session = Session {
            tenant: self,
            user,
            database,
            statements: HashMap::new(),
            portals: HashMap::new(),
        };
        self.greet(&mut conn, &startup, &session)?;
        conn.flush().await?;
        Ok(Some((conn, session)))
    }

    /// Everything a server says between a StartupMessage and the first
    /// ReadyForQuery when it trusts the user.
    fn greet<S>(
        &self,
        conn: &mut Conn<S>,
        startup: &Startup,
        session: &Session<'_>,
    ) -> Result<(), SessionError> {
        if startup.protocol_number_minor > 0 {
            // Like PostgreSQL before 18: speak 3.0, and name the protocol
            // options (`_pq_.*`) that are not understood.
            let unsupported = startup
                .parameters
                .keys()
                .filter(|k| k.starts_with("_pq_."))
                .cloned()
                .collect();
            conn.send(Backend::NegotiateProtocolVersion(
                NegotiateProtocolVersion::new(0, unsupported),
            ))?;
        }
        conn.send(Backend::Authentication(Authentication::Ok))?;
        let application_name = startup
            .parameters
            .get("application_name")
            .map_or("", String::as_str);
        for (name, value) in [
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
            ("integer_datetimes", "on"),
            ("IntervalStyle", "postgres"),
            ("is_superuser", "on"),
            ("server_encoding", "UTF8"),
            ("server_version", SERVER_VERSION),
            ("session_authorization", &session.user),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
        ] {
            conn.send(Backend::ParameterStatus(ParameterStatus::new(
                name.to_owned(),
                value.to_owned(),
            )))?;
        }
        let mut secret = [0; 4];
        // A failing system random source leaves the key at zero: harmless
        // here, since this tenant ignores cancel requests anyway.
        let _ = self.random.fill(&mut secret);
        conn.send(Backend::BackendKeyData(BackendKeyData::new(
            self.next_pid.fetch_add(1, Ordering::Relaxed),
            SecretKey::I32(i32::from_be_bytes(secret)),
        )))?;
        conn.send(ready())
    }
}

/// A framed connection inside TLS.
type TlsConn = Conn<tokio_rustls::server::TlsStream<TcpStream>>;

/// A framed connection: a byte stream, a read buffer that pgwire decodes
/// from, and a write buffer it encodes into.
struct Conn<S> {
    stream: S,
    context: DecodeContext,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl<S> Conn<S> {
    fn new(stream: S, context: DecodeContext) -> Self {
        Self {
            stream,
            context,
            read_buf: BytesMut::with_capacity(1024),
            write_buf: BytesMut::with_capacity(1024),
        }
    }

    /// Queues `message`; [`Conn::flush`] sends it.
    fn send(&mut self, message: Backend) -> Result<(), SessionError> {
        Ok(message.encode(&mut self.write_buf)?)
    }

    /// Queues a FATAL error, which ends the session.
    fn fatal(&mut self, code: &str, message: &str) -> Result<(), SessionError> {
        self.send(error_response("FATAL", code, message))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The next complete message, or `None` at end of stream.
    async fn recv(&mut self) -> Result<Option<Frontend>, SessionError> {
        loop {
            if let Some(message) = Frontend::decode(&mut self.read_buf, &self.context)? {
                return Ok(Some(message));
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Sends everything queued.
    async fn flush(&mut self) -> Result<(), SessionError> {
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await?;
        self.write_buf.clear();
        Ok(())
    }
}

/// One logged-in session and its extended-protocol state.
struct Session<'a> {
    tenant: &'a Tenant,
    user: String,
    database: String,
    /// Prepared statements by name (`""` is the unnamed one).
    statements: HashMap<String, Statement>,
    /// Bound portals by name, with their result format.
    portals: HashMap<String, (Statement, Format)>,
}

impl Session<'_> {
    /// Serves queries until the client terminates or goes away.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        conn: &mut Conn<S>,
    ) -> Result<(), SessionError> {
        // After an error in an extended-protocol exchange, everything up to
        // the next Sync is skipped, as Postgres does.
        let mut skipping = false;
        while let Some(message) = conn.recv().await? {
            let result = match message {
                Frontend::Terminate(_) => return Ok(()),
                Frontend::Sync(_) => {
                    skipping = false;
                    conn.send(ready())?;
                    conn.flush().await?;
                    continue;
                }
                _ if skipping => continue,
                Frontend::Query(query) => {
                    self.simple_query(conn, &query.query)?;
                    conn.flush().await?;
                    continue;
                }
                Frontend::Flush(_) => {
                    conn.flush().await?;
                    continue;
                }
                Frontend::Parse(parse) => self.parse(parse),
                Frontend::Bind(bind) => self.bind(bind),
                Frontend::Describe(describe) => self.describe(describe),
                Frontend::Execute(execute) => self.execute(execute),
                Frontend::Close(close) => self.close(close),
                _ => {
                    conn.fatal(PROTOCOL_VIOLATION, "unexpected message")?;
                    conn.flush().await?;
                    return Ok(());
                }
            };
            match result {
                Ok(replies) => {
                    for reply in replies {
                        conn.send(reply)?;
                    }
                }
                Err(error) => {
                    conn.send(error.response())?;
                    skipping = true;
                }
            }
        }
        Ok(())
    }

    /// A simple-protocol query string: each statement in turn, stopping at
    /// the first error, then ReadyForQuery.
    fn simple_query<S>(&self, conn: &mut Conn<S>, sql: &str) -> Result<(), SessionError> {
        let statements: Vec<&str> = sql
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if statements.is_empty() {
            conn.send(Backend::EmptyQueryResponse(EmptyQueryResponse::new()))?;
        }
        for sql in statements {
            match self.plan(sql) {
                Ok(Statement::Empty) => {}
                Ok(Statement::Answer(answer)) => {
                    conn.send(answer.row_description(Format::Text))?;
                    conn.send(answer.data_row(Format::Text))?;
                    conn.send(answer.command_complete())?;
                }
                Err(error) => {
                    conn.send(error.response())?;
                    break;
                }
            }
        }
        conn.send(ready())
    }

    /// What `sql` (one statement) returns in this session.
    fn plan(&self, sql: &str) -> Result<Statement, SqlError> {
        let normalized = sql
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        let tenant = self.tenant.name();
        let (column, ty, value, tag) = match normalized.as_str() {
            "" => return Ok(Statement::Empty),
            "select 1" => ("?column?", Type::Int4, Value::Int(1), "SELECT 1"),
            "select current_database()" => (
                "current_database",
                Type::Name,
                Value::Text(self.database.clone()),
                "SELECT 1",
            ),
            "select current_user" => (
                "current_user",
                Type::Name,
                Value::Text(self.user.clone()),
                "SELECT 1",
            ),
            "select version()" => (
                "version",
                Type::Text,
                Value::Text(format!(
                    "PostgreSQL {SERVER_VERSION}, embedded tenant {tenant}"
                )),
                "SELECT 1",
            ),
            "show tenant" => ("tenant", Type::Text, Value::Text(tenant.to_owned()), "SHOW"),
            "show cluster_name" => (
                "cluster_name",
                Type::Text,
                Value::Text(tenant.to_owned()),
                "SHOW",
            ),
            "show server_version" => (
                "server_version",
                Type::Text,
                Value::Text(SERVER_VERSION.to_owned()),
                "SHOW",
            ),
            _ => {
                return Err(SqlError {
                    code: NOT_SUPPORTED,
                    message: "the demo tenant only answers SELECT 1, SELECT current_database(), \
                              SELECT current_user, SELECT version(), SHOW tenant, \
                              SHOW cluster_name and SHOW server_version"
                        .to_owned(),
                })
            }
        };
        Ok(Statement::Answer(Arc::new(Answer {
            column,
            ty,
            value,
            tag,
        })))
    }

    fn parse(&mut self, parse: Parse) -> Result<Vec<Backend>, SqlError> {
        let statement = self.plan(&parse.query)?;
        self.statements
            .insert(parse.name.unwrap_or_default(), statement);
        Ok(vec![Backend::ParseComplete(ParseComplete::new())])
    }

    fn bind(&mut self, bind: Bind) -> Result<Vec<Backend>, SqlError> {
        let name = bind.statement_name.unwrap_or_default();
        let statement = self
            .statements
            .get(&name)
            .cloned()
            .ok_or_else(|| SqlError::no_statement(&name))?;
        if !bind.parameters.is_empty() {
            return Err(SqlError {
                code: PROTOCOL_VIOLATION,
                message: format!(
                    "bind message supplies {} parameters, but prepared statement \"{name}\" requires 0",
                    bind.parameters.len()
                ),
            });
        }
        // One result column: a single format code, if any, applies to it.
        let format = match bind.result_column_format_codes.first() {
            None | Some(0) => Format::Text,
            Some(1) => Format::Binary,
            Some(code) => {
                return Err(SqlError {
                    code: PROTOCOL_VIOLATION,
                    message: format!("unsupported format code: {code}"),
                })
            }
        };
        self.portals
            .insert(bind.portal_name.unwrap_or_default(), (statement, format));
        Ok(vec![Backend::BindComplete(BindComplete::new())])
    }

    fn describe(&self, describe: Describe) -> Result<Vec<Backend>, SqlError> {
        let name = describe.name.unwrap_or_default();
        let (statement, format, parameters) = if describe.target_type == b'S' {
            let statement = self
                .statements
                .get(&name)
                .ok_or_else(|| SqlError::no_statement(&name))?;
            // A statement's result format is not known until it is bound.
            (statement, Format::Text, true)
        } else {
            let (statement, format) = self
                .portals
                .get(&name)
                .ok_or_else(|| SqlError::no_portal(&name))?;
            (statement, *format, false)
        };
        let mut replies = Vec::with_capacity(2);
        if parameters {
            replies.push(Backend::ParameterDescription(ParameterDescription::new(
                Vec::new(),
            )));
        }
        replies.push(match statement {
            Statement::Empty => Backend::NoData(NoData::new()),
            Statement::Answer(answer) => answer.row_description(format),
        });
        Ok(replies)
    }

    fn execute(&self, execute: Execute) -> Result<Vec<Backend>, SqlError> {
        let name = execute.name.unwrap_or_default();
        let (statement, format) = self
            .portals
            .get(&name)
            .ok_or_else(|| SqlError::no_portal(&name))?;
        // Every answer is one row, so a row limit (`max_rows`) never bites.
        Ok(match statement {
            Statement::Empty => vec![Backend::EmptyQueryResponse(EmptyQueryResponse::new())],
            Statement::Answer(answer) => vec![answer.data_row(*format), answer.command_complete()],
        })
    }

    fn close(&mut self, close: Close) -> Result<Vec<Backend>, SqlError> {
        let name = close.name.unwrap_or_default();
        // Closing what does not exist is not an error.
        if close.target_type == b'S' {
            self.statements.remove(&name);
        } else {
            self.portals.remove(&name);
        }
        Ok(vec![Backend::CloseComplete(CloseComplete::new())])
    }
}

/// A planned statement.
#[derive(Clone, Debug)]
enum Statement {
    /// An empty query string.
    Empty,
    /// A one-row, one-column answer.
    Answer(Arc<Answer>),
}

/// The one row a recognised statement returns.
#[derive(Debug)]
struct Answer {
    column: &'static str,
    ty: Type,
    value: Value,
    tag: &'static str,
}

impl Answer {
    fn row_description(&self, format: Format) -> Backend {
        Backend::RowDescription(RowDescription::new(vec![FieldDescription::new(
            self.column.to_owned(),
            0,
            0,
            self.ty.oid(),
            self.ty.size(),
            -1,
            format as i16,
        )]))
    }

    fn data_row(&self, format: Format) -> Backend {
        let mut data = BytesMut::new();
        match (&self.value, format) {
            (Value::Int(n), Format::Binary) => {
                data.put_i32(4);
                data.put_i32(*n);
            }
            (Value::Int(n), Format::Text) => put_field(&mut data, n.to_string().as_bytes()),
            // text and name are sent as their UTF-8 bytes in either format.
            (Value::Text(text), _) => put_field(&mut data, text.as_bytes()),
        }
        Backend::DataRow(DataRow::new(data, 1))
    }

    fn command_complete(&self) -> Backend {
        Backend::CommandComplete(CommandComplete::new(self.tag.to_owned()))
    }
}

/// Appends one non-null field: its length, then its bytes.
fn put_field(data: &mut BytesMut, bytes: &[u8]) {
    // Every value here is a short string or number.
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    data.put_i32(len);
    data.put_slice(bytes);
}

/// The Postgres types of the answers.
#[derive(Clone, Copy, Debug)]
enum Type {
    Int4,
    Text,
    Name,
}

impl Type {
    fn oid(self) -> u32 {
        match self {
            Type::Int4 => 23,
            Type::Text => 25,
            Type::Name => 19,
        }
    }

    fn size(self) -> i16 {
        match self {
            Type::Int4 => 4,
            Type::Text => -1,
            Type::Name => 64,
        }
    }
}

/// A value in an answer.
#[derive(Debug)]
enum Value {
    Int(i32),
    Text(String),
}

/// The wire format of a result column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text = 0,
    Binary = 1,
}

/// An ERROR for one statement; the session goes on.
#[derive(Debug)]
struct SqlError {
    code: &'static str,
    message: String,
}

impl SqlError {
    fn no_statement(name: &str) -> Self {
        Self {
            code: NO_SUCH_STATEMENT,
            message: format!("prepared statement \"{name}\" does not exist"),
        }
    }

    fn no_portal(name: &str) -> Self {
        Self {
            code: NO_SUCH_PORTAL,
            message: format!("portal \"{name}\" does not exist"),
        }
    }

    fn response(&self) -> Backend {
        error_response("ERROR", self.code, &self.message)
    }
}

/// An ErrorResponse with severity, SQLSTATE and message.
fn error_response(severity: &str, code: &str, message: &str) -> Backend {
    Backend::ErrorResponse(ErrorResponse::new(vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ]))
}

/// ReadyForQuery, idle: there are no transactions here.
fn ready() -> Backend {
    Backend::ReadyForQuery(ReadyForQuery::new(TransactionStatus::Idle))
}
