//! Liveness links between the nodes of one application: how a node learns
//! within milliseconds that another node's **process is gone** (`kill -9`, a
//! crash, an OOM kill), without shortening any session.
//!
//! Each consumer-group node with `[ownership] liveness_addr` runs a
//! [`Beacon`]: a TCP listener that greets every connection with the node's
//! identity, then tells it the group member ids of the node's shards as they
//! change, and says `leaving` when the node shuts down. The other nodes
//! ([`watch_peer`], started by the owners' registry for every member that
//! names a beacon) hold a connection to it. When the process dies, its
//! kernel closes the connection: the watcher reads the end without a
//! goodbye, connects again, and is refused (nothing listens there any more)
//! or greeted by another process. Only then is the peer [`PeerEnd::Died`],
//! and the registry removes its group members and fences its transactional
//! ids at once (`kafka::registry`).
//!
//! Why not a shorter session: a session cannot tell a dead node from one
//! whose heartbeats were late (a stalled broker, a loaded machine), so a
//! session short enough for a 2 s take-over evicted live nodes on a loaded
//! machine (docs/STATE.md). A closed connection followed by a refused one
//! is never the result of a stall.
//!
//! Owns: this process's beacon, the watch of one peer's beacon, and the
//! book of this process's group member ids that beacons tell. Must never:
//! call a peer dead on a timeout, a stall or an unreachable host (those are
//! the sessions' to judge), act on a peer it never verified (the greeting
//! names the application, node and process the registry listed), carry
//! flow data, or decide ownership.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};

/// First word of a beacon's greeting; a peer speaking anything else is not
/// watched.
const PROTOCOL: &str = "tradeflow-liveness/1";
/// How often the beacon accepts connections and sends member changes. A
/// death is seen through the kernel, not this loop.
const BEACON_TICK: Duration = Duration::from_millis(20);
/// How long a watcher waits for a connection, and for the greeting on it.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How often a watcher blocked on its connection checks its stop flag.
const WATCH_TICK: Duration = Duration::from_millis(200);
/// The longest line a beacon sends: a greeting or a member.
const LINE_BYTES_MAX: usize = 1_024;

/// Who runs a beacon: what the registry lists of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub application: String,
    pub node: String,
    pub process: u32,
}

impl PeerIdentity {
    fn greeting(&self) -> String {
        format!(
            "{PROTOCOL}\t{}\t{}\t{}\n",
            clean(&self.application),
            clean(&self.node),
            self.process
        )
    }

    fn parse_greeting(line: &str) -> Option<PeerIdentity> {
        let mut fields = line.split('\t');
        if fields.next()? != PROTOCOL {
            return None;
        }
        let identity = PeerIdentity {
            application: fields.next()?.to_string(),
            node: fields.next()?.to_string(),
            process: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(identity)
    }
}

/// A field of a line: tabs and line ends would split it.
fn clean(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}

/// What a beacon sends after its greeting.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A shard's group member: `member <instance id> <member id>`.
    Member {
        instance_id: String,
        member_id: String,
    },
    /// The node shuts down; its shards leave the group themselves.
    Leaving,
}

impl Line {
    fn parse(line: &str) -> Option<Line> {
        let mut fields = line.split('\t');
        let line = match fields.next()? {
            "member" => Line::Member {
                instance_id: fields.next()?.to_string(),
                member_id: fields.next()?.to_string(),
            },
            "leaving" => Line::Leaving,
            _ => return None,
        };
        fields.next().is_none().then_some(line)
    }
}

/// The group member ids of this process's shards, by `group.instance.id`,
/// as their consumers were created (`kafka::RdKafkaPort`): a snapshot
/// replaced whole on each change (once per consumer created, never on the
/// data path), read by the beacons without a lock.
static MEMBER_IDS: LazyLock<ArcSwap<BTreeMap<String, String>>> =
    LazyLock::new(|| ArcSwap::from_pointee(BTreeMap::new()));
/// Raised at every change of [`MEMBER_IDS`], so beacons resend.
static MEMBER_IDS_VERSION: AtomicU64 = AtomicU64::new(0);

/// How many times this process removed a dead node's members from a group:
/// each group member of this process then asks for its assignment at once
/// instead of at its next heartbeat (`kafka::RdKafkaPort`). Read once per
/// poll by the shards: one relaxed load, written a few times a day.
static PEER_DEATHS: AtomicU64 = AtomicU64::new(0);

/// Counts a dead node's members removed from a group by this process.
pub fn note_peer_death() {
    PEER_DEATHS.fetch_add(1, Ordering::Release);
}

/// See [`note_peer_death`].
pub fn peer_deaths() -> u64 {
    PEER_DEATHS.load(Ordering::Acquire)
}

/// Records the member id of the consumer that now holds `instance_id` in
/// this process, for this node's beacon to tell its peers.
pub fn note_group_member(instance_id: &str, member_id: &str) {
    if MEMBER_IDS.load().get(instance_id).map(String::as_str) == Some(member_id) {
        return;
    }
    // Shards of one process may note theirs at the same time: `rcu` retries
    // the copy until it replaced the snapshot it started from.
    MEMBER_IDS.rcu(|ids| {
        let mut ids = BTreeMap::clone(ids);
        ids.insert(instance_id.to_string(), member_id.to_string());
        ids
    });
    MEMBER_IDS_VERSION.fetch_add(1, Ordering::AcqRel);
}

/// The member lines of `instance_ids` as last noted.
fn member_lines(instance_ids: &[String]) -> String {
    let ids = MEMBER_IDS.load();
    instance_ids
        .iter()
        .filter_map(|instance| {
            ids.get(instance)
                .map(|member| format!("member\t{}\t{}\n", clean(instance), clean(member)))
        })
        .collect()
}

/// This node's liveness beacon: listens until dropped, then tells every
/// peer `leaving` (a clean shutdown, which no peer acts on).
pub struct Beacon {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Raised with `stop` to close without the goodbye, as a dead process.
    vanish: Arc<AtomicBool>,
    /// Connections held by peers now.
    watchers: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Beacon {
    /// Listens on `bind` (port 0: a free port) for `identity`, whose shards
    /// hold the group instance ids `instance_ids`.
    pub fn start(
        bind: SocketAddr,
        identity: PeerIdentity,
        instance_ids: Vec<String>,
    ) -> std::io::Result<Beacon> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let vanish = Arc::new(AtomicBool::new(false));
        let watchers = Arc::new(AtomicUsize::new(0));
        let (stopping, vanishing, counting) = (
            Arc::clone(&stop),
            Arc::clone(&vanish),
            Arc::clone(&watchers),
        );
        let thread = std::thread::Builder::new()
            .name("tf-beacon".into())
            .spawn(move || {
                run_beacon(
                    listener,
                    identity,
                    instance_ids,
                    [&stopping, &vanishing],
                    &counting,
                );
            })?;
        info!(%addr, "liveness beacon listening");
        Ok(Beacon {
            addr,
            stop,
            vanish,
            watchers,
            thread: Some(thread),
        })
    }

    /// How many peers hold a connection to it now (as of its last tick; a
    /// peer gone is counted until a write to it fails).
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }

    /// The address it listens on (with the port chosen for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and the listener without the goodbye: what
    /// the peers see of a process killed with `kill -9`.
    pub fn vanish(mut self) {
        self.vanish.store(true, Ordering::Release);
        self.close();
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the liveness beacon's thread panicked");
            }
        }
    }
}

impl Drop for Beacon {
    fn drop(&mut self) {
        self.close();
    }
}

fn run_beacon(
    listener: TcpListener,
    identity: PeerIdentity,
    instance_ids: Vec<String>,
    [stop, vanish]: [&AtomicBool; 2],
    watchers: &AtomicUsize,
) {
    let greeting = identity.greeting();
    let mut peers: Vec<TcpStream> = Vec::new();
    let mut sent_version = MEMBER_IDS_VERSION.load(Ordering::Acquire);
    while !stop.load(Ordering::Acquire) {
        loop {
            match listener.accept() {
                Ok((mut peer, from)) => {
                    let members = member_lines(&instance_ids);
                    let greeted = peer
                        .set_nonblocking(false)
                        .and_then(|()| peer.set_nodelay(true))
                        .and_then(|()| peer.set_write_timeout(Some(CONNECT_TIMEOUT)))
                        .and_then(|()| peer.write_all(format!("{greeting}{members}").as_bytes()));
                    match greeted {
                        Ok(()) => {
                            debug!(%from, "a peer watches this node's liveness");
                            peers.push(peer);
                        }
                        Err(e) => debug!(%from, error = %e, "greeting a peer"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "accepting a peer");
                    break;
                }
            }
        }
        let version = MEMBER_IDS_VERSION.load(Ordering::Acquire);
        if version != sent_version {
            sent_version = version;
            let members = member_lines(&instance_ids);
            // A peer that cannot take a few bytes has gone: drop it.
            peers.retain_mut(|peer| peer.write_all(members.as_bytes()).is_ok());
        }
        // A watcher that went (its node stopped or restarted) closed its
        // end: let its socket go now rather than at the next failed write.
        peers.retain(|peer| !peer_closed(peer));
        watchers.store(peers.len(), Ordering::Release);
        std::thread::sleep(BEACON_TICK);
    }
    if !vanish.load(Ordering::Acquire) {
        for peer in &mut peers {
            let _ = peer.write_all(b"leaving\n");
            let _ = peer.shutdown(Shutdown::Write);
        }
    }
}

/// Whether a watcher closed its connection. Watchers send nothing, so a
/// readable socket is one at its end (or sending what no watcher sends:
/// dropped as well).
fn peer_closed(peer: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    if peer.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = match peer.peek(&mut byte) {
        Err(e) => e.kind() != ErrorKind::WouldBlock,
        Ok(_) => true,
    };
    closed || peer.set_nonblocking(false).is_err()
}

/// How a watch on a peer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerEnd {
    /// The peer's process is gone: its connection ended without a goodbye
    /// and its address refused a new one (or another process answers
    /// there). `members` are its shards' group members as it last told
    /// them: instance id → member id. `restarted`: another process of the
    /// node already listens at its address; that process fenced the dead
    /// one's transactions at its own start, and its transactional ids
    /// (the same) must not be fenced again.
    Died {
        members: BTreeMap<String, String>,
        restarted: bool,
    },
    /// The peer said goodbye: it shuts down and leaves the group itself.
    Left,
    /// Nothing is known: the peer could not be verified or reached, or the
    /// watch was stopped. Its session decides, as without a beacon.
    LostTrack(String),
}

/// Watches the beacon at `addr`, which must greet as `expected`, until the
/// peer dies, leaves, cannot be followed, or `stop` is raised. Blocks:
/// run it on a thread of its own.
pub fn watch_peer(addr: SocketAddr, expected: &PeerIdentity, stop: &AtomicBool) -> PeerEnd {
    let mut link = match PeerLink::open(addr) {
        Ok(link) => link,
        Err(why) => return PeerEnd::LostTrack(why),
    };
    match link.greeting(stop) {
        Ok(identity) if identity == *expected => {
            info!(%addr, node = %expected.node, process = expected.process, "watching a peer's liveness beacon");
        }
        Ok(identity) => {
            return PeerEnd::LostTrack(format!(
                "{addr} greets as {identity:?}, not as the registry lists it"
            ))
        }
        Err(why) => return PeerEnd::LostTrack(why.to_string()),
    }
    let mut members = BTreeMap::new();
    loop {
        match link.follow(&mut members, stop) {
            Followed::Left => return PeerEnd::Left,
            Followed::Stopped => return PeerEnd::LostTrack("the watch was stopped".into()),
            Followed::Closed(how) => match confirm_gone(addr, expected, stop) {
                Confirmation::Gone { why, restarted } => {
                    info!(%addr, node = %expected.node, process = expected.process, %how, %why,
                        "a peer's liveness link closed without a goodbye and the process is gone");
                    return PeerEnd::Died { members, restarted };
                }
                Confirmation::Alive(again) => link = again,
                Confirmation::Unknown(why) => {
                    return PeerEnd::LostTrack(format!(
                        "its link closed ({how}) and {why}: its session decides"
                    ))
                }
            },
        }
    }
}

enum Confirmation {
    /// Nothing listens at the address, or another process of the node does
    /// (`restarted`).
    Gone {
        why: String,
        restarted: bool,
    },
    /// The same process greets again: only the connection broke.
    Alive(PeerLink),
    Unknown(String),
}

/// After a link closed without a goodbye: is the process gone? A process
/// that is gone leaves nothing listening on its address. A process being
/// killed closes its connections before its listener, so a connection
/// made in between is accepted by the kernel and reset when the listener
/// goes: that is asked again, a few times, until the address refuses.
fn confirm_gone(addr: SocketAddr, expected: &PeerIdentity, stop: &AtomicBool) -> Confirmation {
    let mut resets = 0;
    loop {
        let mut again = match PeerLink::open(addr) {
            Err(why) if why.contains(REFUSED) => {
                return Confirmation::Gone {
                    why,
                    restarted: false,
                }
            }
            Err(why) => return Confirmation::Unknown(why),
            Ok(again) => again,
        };
        match again.greeting(stop) {
            Ok(identity) if identity == *expected => return Confirmation::Alive(again),
            Ok(identity)
                if identity.application == expected.application
                    && identity.node == expected.node =>
            {
                return Confirmation::Gone {
                    why: format!("process {} of the node listens there now", identity.process),
                    restarted: true,
                }
            }
            Ok(identity) => {
                return Confirmation::Unknown(format!("{addr} now greets as {identity:?}"))
            }
            Err(GreetingError::Ended(how)) if resets < CONFIRM_RESETS_MAX => {
                debug!(%addr, %how, "a connection to a peer's beacon ended before its greeting; asking again");
                resets += 1;
                std::thread::sleep(CONFIRM_PAUSE);
            }
            Err(e) => return Confirmation::Unknown(e.to_string()),
        }
    }
}

/// How many connections ended before a greeting a confirmation tries past.
const CONFIRM_RESETS_MAX: u32 = 20;
/// Pause between those tries.
const CONFIRM_PAUSE: Duration = Duration::from_millis(10);

/// Marks an `open` failure that is a refusal: the host answered, and
/// nothing listens on the port.
const REFUSED: &str = "connection refused";

/// Why a beacon's greeting did not come.
#[derive(Debug, thiserror::Error)]
enum GreetingError {
    #[error("not a liveness beacon: {0:?}")]
    NotABeacon(String),
    #[error("no greeting within {CONNECT_TIMEOUT:?}")]
    Silent,
    #[error("the connection {0} before the greeting")]
    Ended(String),
    #[error("the watch was stopped")]
    Stopped,
}

enum Followed {
    Left,
    Stopped,
    Closed(String),
}

/// One connection to a peer's beacon, read line by line.
struct PeerLink {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl PeerLink {
    fn open(addr: SocketAddr) -> Result<PeerLink, String> {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(WATCH_TICK))
                    .map_err(|e| format!("{addr}: {e}"))?;
                Ok(PeerLink {
                    stream,
                    pending: Vec::new(),
                })
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Err(format!("{addr}: {REFUSED}")),
            Err(e) => Err(format!("{addr} could not be reached: {e}")),
        }
    }

    /// The next whole line; `Ok(None)` when the watch should look at its
    /// stop flag; `Err` when the connection ended (how).
    fn line(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            if self.pending.len() > LINE_BYTES_MAX {
                return Err("a line longer than any a beacon sends".into());
            }
            let mut chunk = [0u8; 512];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn greeting(&mut self, stop: &AtomicBool) -> Result<PeerIdentity, GreetingError> {
        let waited = std::time::Instant::now();
        loop {
            match self.line() {
                Ok(Some(line)) => {
                    return PeerIdentity::parse_greeting(&line)
                        .ok_or(GreetingError::NotABeacon(line))
                }
                Ok(None) if stop.load(Ordering::Acquire) => return Err(GreetingError::Stopped),
                Ok(None) if waited.elapsed() >= CONNECT_TIMEOUT => {
                    return Err(GreetingError::Silent)
                }
                Ok(None) => {}
                Err(how) => return Err(GreetingError::Ended(how)),
            }
        }
    }

    fn follow(&mut self, members: &mut BTreeMap<String, String>, stop: &AtomicBool) -> Followed {
        loop {
            match self.line() {
                Ok(Some(line)) => match Line::parse(&line) {
                    Some(Line::Member {
                        instance_id,
                        member_id,
                    }) => {
                        members.insert(instance_id, member_id);
                    }
                    Some(Line::Leaving) => return Followed::Left,
                    None => debug!(line, "a line this watcher does not know; skipped"),
                },
                Ok(None) if stop.load(Ordering::Acquire) => return Followed::Stopped,
                Ok(None) => {}
                Err(how) => return Followed::Closed(how),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node: &str, process: u32) -> PeerIdentity {
        PeerIdentity {
            application: "tf-test".into(),
            node: node.into(),
            process,
        }
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("an address")
    }

    fn watch(addr: SocketAddr, expected: PeerIdentity) -> JoinHandle<PeerEnd> {
        std::thread::spawn(move || watch_peer(addr, &expected, &AtomicBool::new(false)))
    }

    #[test]
    fn greetings_and_lines_read_back() {
        let id = identity("node-b", 42);
        let greeting = id.greeting();
        assert_eq!(
            PeerIdentity::parse_greeting(greeting.trim_end()),
            Some(id.clone())
        );
        assert_eq!(
            PeerIdentity::parse_greeting("HTTP/1.1 400 Bad Request"),
            None
        );
        assert_eq!(
            PeerIdentity::parse_greeting(&format!("{}\textra", greeting.trim_end())),
            None
        );
        assert_eq!(
            Line::parse("member\tnode-b-0\tabc"),
            Some(Line::Member {
                instance_id: "node-b-0".into(),
                member_id: "abc".into()
            })
        );
        assert_eq!(Line::parse("leaving"), Some(Line::Leaving));
        assert_eq!(Line::parse("member\tonly-one"), None);
    }

    /// A process that dies closes its connections and its listener: the
    /// watcher must call it dead, with the member ids it was told.
    #[test]
    fn a_beacon_that_vanishes_is_dead_with_its_members() {
        let instance = "liveness-test-vanish-0".to_string();
        note_group_member(&instance, "member-1");
        let beacon = Beacon::start(loopback(), identity("node-b", 7), vec![instance.clone()])
            .expect("a beacon");
        let watcher = watch(beacon.addr(), identity("node-b", 7));
        // A change after the greeting reaches the watcher too.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(beacon.watchers(), 1);
        note_group_member(&instance, "member-2");
        std::thread::sleep(Duration::from_millis(200));
        beacon.vanish();
        let end = watcher.join().expect("the watch ends");
        assert_eq!(
            end,
            PeerEnd::Died {
                members: BTreeMap::from([(instance, "member-2".to_string())]),
                restarted: false,
            }
        );
    }

    #[test]
    fn a_beacon_dropped_says_goodbye_and_is_not_dead() {
        let beacon =
            Beacon::start(loopback(), identity("node-b", 7), Vec::new()).expect("a beacon");
        let watcher = watch(beacon.addr(), identity("node-b", 7));
        std::thread::sleep(Duration::from_millis(200));
        drop(beacon);
        assert_eq!(watcher.join().expect("the watch ends"), PeerEnd::Left);
    }

    /// The registry lists process 7; a beacon of process 8 (or another node,
    /// or something else on that port) is not watched, so never called dead.
    #[test]
    fn a_beacon_that_is_not_the_listed_process_is_never_called_dead() {
        let beacon =
            Beacon::start(loopback(), identity("node-b", 8), Vec::new()).expect("a beacon");
        let end = watch(beacon.addr(), identity("node-b", 7))
            .join()
            .expect("the watch ends");
        assert!(matches!(end, PeerEnd::LostTrack(_)), "{end:?}");
        beacon.vanish();
        // Nothing listening from the start: not verified, so not dead.
        let closed = TcpListener::bind(loopback()).expect("a port");
        let addr = closed.local_addr().expect("its address");
        drop(closed);
        let end = watch(addr, identity("node-b", 7))
            .join()
            .expect("the watch ends");
        assert!(matches!(end, PeerEnd::LostTrack(_)), "{end:?}");
    }

    /// A restarted process listening at the same address proves the watched
    /// one gone.
    #[test]
    fn another_process_at_the_address_means_the_watched_one_is_gone() {
        let first = Beacon::start(loopback(), identity("node-b", 7), Vec::new()).expect("a beacon");
        let addr = first.addr();
        let watcher = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            watch_peer(addr, &identity("node-b", 7), &stop)
        });
        std::thread::sleep(Duration::from_millis(200));
        // The greeting of the new process must be there when the watcher
        // reconnects: start it in the same breath as the old one vanishes.
        first.vanish();
        // (Were the port not free again yet, the reconnection would be
        // refused: as dead.)
        let _second = Beacon::start(addr, identity("node-b", 8), Vec::new());
        let end = watcher.join().expect("the watch ends");
        assert!(matches!(end, PeerEnd::Died { .. }), "{end:?}");
        // Which of the two the watcher met is a race; each on its own:
        let restarted =
            Beacon::start(loopback(), identity("node-b", 8), Vec::new()).expect("a beacon");
        assert!(matches!(
            confirm_gone(
                restarted.addr(),
                &identity("node-b", 7),
                &AtomicBool::new(false)
            ),
            Confirmation::Gone {
                restarted: true,
                ..
            }
        ));
        let closed = TcpListener::bind(loopback()).expect("a port");
        let addr = closed.local_addr().expect("its address");
        drop(closed);
        assert!(matches!(
            confirm_gone(addr, &identity("node-b", 7), &AtomicBool::new(false)),
            Confirmation::Gone {
                restarted: false,
                ..
            }
        ));
    }

    #[test]
    fn a_stopped_watch_ends_without_a_verdict() {
        let beacon =
            Beacon::start(loopback(), identity("node-b", 7), Vec::new()).expect("a beacon");
        let addr = beacon.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let watcher =
            std::thread::spawn(move || watch_peer(addr, &identity("node-b", 7), &stopping));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(beacon.watchers(), 1);
        stop.store(true, Ordering::Release);
        let end = watcher.join().expect("the watch ends");
        assert!(matches!(end, PeerEnd::LostTrack(_)), "{end:?}");
        // The beacon lets the watcher's closed connection go.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while beacon.watchers() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(BEACON_TICK);
        }
        assert_eq!(beacon.watchers(), 0);
        drop(beacon);
    }
}
