//! A TCP relay between a client and a target (usually [`crate::sshd::Sshd`]):
//! the network in between, which tests can slow down, cut or close.
//!
//! It listens on a free 127.0.0.1 port. Each accepted connection gets its own
//! connection to the target and four threads: per direction, a reader that
//! stamps each chunk with the time it may be delivered (now + the current
//! one-way delay) and a writer that delivers the chunks in order at that time.
//! A delay therefore adds latency without serialising throughput.
//!
//! A cut resets both sockets of every live connection at once (SO_LINGER 0 and
//! a TCP disconnect), so both peers see a RST, as after a NAT or firewall
//! dropped the flow. Dropping the relay stops the listener and every pump.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the relay waits for the target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read at once from either side.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction before the reader waits for the writer
/// (16 MiB: far more than any delay-bandwidth product a test uses).
const QUEUE: usize = 256;

/// A running relay. See the module docs.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    refuse: AtomicBool,
    /// One-way delay added to each direction, in microseconds.
    delay_us: AtomicU64,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// Both sockets of one relayed connection. One descriptor each, shared by the
/// pumps, so a reset reaches every thread using it.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// Pump threads still running; the last one removes the connection.
    pumps_left: AtomicUsize,
}

enum Chunk {
    Data(Instant, Vec<u8>),
    /// The source half-closed: pass the FIN on once the data before it is out.
    Eof(Instant),
}

impl Relay {
    /// Listens on a free 127.0.0.1 port and relays every connection to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("relay: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay: local_addr");
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            pumps: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("relay-accept-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &s))
            .expect("spawn the relay acceptor");
        Relay {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every chunk forwarded from now on by `delay`, in each direction
    /// (a round trip gains twice `delay`). Order is kept.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::SeqCst);
    }

    /// Resets every live connection, both sides (the client and the target see
    /// a RST). Returns how many connections were cut.
    pub fn cut_all(&self) -> usize {
        let conns: Vec<Arc<Conn>> = self
            .shared
            .conns
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for c in &conns {
            c.reset();
        }
        conns.len()
    }

    /// Connections currently relayed (accepted and not yet closed on both sides).
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// While true, new connections are accepted and closed at once, without
    /// reaching the target. Live connections are not affected.
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // No new connection can appear now: reset the live ones and wait for
        // their pumps.
        self.cut_all();
        let pumps = mem::take(&mut *self.shared.pumps.lock().unwrap());
        for p in pumps {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        if shared.refuse.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
            // Target down: the client sees its connection closed.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let conn = Arc::new(Conn {
            client,
            server,
            pumps_left: AtomicUsize::new(4),
        });
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.conns.lock().unwrap().insert(id, conn.clone());
        let mut pumps = shared.pumps.lock().unwrap();
        // Finished pumps are joined as we go so a long test does not pile them up.
        let (done, running): (Vec<_>, Vec<_>) = mem::take(&mut *pumps)
            .into_iter()
            .partition(|h| h.is_finished());
        *pumps = running;
        for h in done {
            let _ = h.join();
        }
        for upstream in [true, false] {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let (c, s) = (conn.clone(), shared.clone());
            pumps.push(spawn_pump(id, "read", move || {
                read_side(&c, upstream, &tx, &s);
                c.pump_done(id, &s);
            }));
            let (c, s) = (conn.clone(), shared.clone());
            pumps.push(spawn_pump(id, "write", move || {
                write_side(&c, upstream, &rx);
                c.pump_done(id, &s);
            }));
        }
    }
}

fn spawn_pump(id: u64, what: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(format!("relay-{id}-{what}"))
        .spawn(f)
        .expect("spawn a relay pump")
}

/// Reads one side (the client when `upstream`) and queues chunks stamped with
/// their delivery time.
fn read_side(conn: &Conn, upstream: bool, tx: &SyncSender<Chunk>, shared: &Shared) {
    let mut from = if upstream { &conn.client } else { &conn.server };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                // A reset (or a cut): the other side gets one too.
                conn.reset();
                return;
            }
        };
        let due = Instant::now() + Duration::from_micros(shared.delay_us.load(Ordering::SeqCst));
        let chunk = if n == 0 {
            Chunk::Eof(due)
        } else {
            Chunk::Data(due, buf[..n].to_vec())
        };
        // The writer is gone only after a write error, which reset both sides.
        if tx.send(chunk).is_err() || n == 0 {
            return;
        }
    }
}

/// Delivers the queued chunks to the other side (the target when `upstream`),
/// each no earlier than its stamp.
fn write_side(conn: &Conn, upstream: bool, rx: &Receiver<Chunk>) {
    let mut to = if upstream { &conn.server } else { &conn.client };
    // The reader is gone without an Eof only after a reset.
    while let Ok(chunk) = rx.recv() {
        let due = match &chunk {
            Chunk::Data(due, _) | Chunk::Eof(due) => *due,
        };
        // Emulated latency, not synchronisation.
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            thread::sleep(wait);
        }
        match chunk {
            Chunk::Data(_, bytes) => {
                if to.write_all(&bytes).is_err() {
                    conn.reset();
                    return;
                }
            }
            Chunk::Eof(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

impl Conn {
    /// Sends a RST on both sockets and wakes every pump blocked on them.
    fn reset(&self) {
        for s in [&self.client, &self.server] {
            reset_socket(s);
        }
    }

    fn pump_done(&self, id: u64, shared: &Shared) {
        if self.pumps_left.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.conns.lock().unwrap().remove(&id);
        }
    }
}

/// SO_LINGER 0, then connect(AF_UNSPEC): Linux aborts the connection with a
/// RST right away (close() would wait for the other threads' use of the
/// descriptor to end) and fails pending and later reads and writes. The
/// shutdown afterwards covers a socket that was already closing.
fn reset_socket(s: &TcpStream) {
    let fd = s.as_raw_fd();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: valid descriptor owned by `s`, pointers to live stack values of
    // the sizes passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::connect(
            fd,
            &unspec,
            mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}
