//! Group-coordinator requests librdkafka has no API for, spoken on a plain
//! connection of our own (the messages are `kafka-protocol`'s): finding a
//! group's coordinator, removing members from a group on behalf of a node
//! that died (`LeaveGroup` with member identities, what the Java admin
//! client's `removeMembersFromConsumerGroup` sends), and describing a
//! consumer-protocol group.
//!
//! Removing a dead node's static members makes the group hand their
//! partitions over at once, instead of after the group's session timeout
//! (`group.consumer.session.timeout.ms`): the coordinator fences them as if
//! their session had expired. Each member is named by its
//! `group.instance.id` **and** its member id, so a member that has since
//! been replaced (a restarted process under the same instance id) is
//! refused by the coordinator (`FENCED_INSTANCE_ID`) and left alone.
//!
//! Owns: those requests and their connections, which live for one call.
//! Must never: remove a member on a suspicion (the caller removes only
//! members of a process known dead, see `crate::liveness`), retry past its
//! deadline, or connect less securely than the client properties ask
//! (`broker_link`: TLS and SASL PLAIN/SCRAM as librdkafka reads them; what
//! it cannot honour is [`GroupAdminError::Security`], and nothing is sent:
//! the group then waits out the session, as without it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, FindCoordinatorRequest, GroupId, LeaveGroupRequest,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::ResponseError;

use super::broker_link::{BrokerSecurity, BrokerStream, SaslExchange};
use super::KafkaSettings;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};

/// `FindCoordinator` v3: one key per request, flexible encoding (Kafka 2.4+).
const FIND_COORDINATOR_VERSION: i16 = 3;
/// `LeaveGroup` v5: member identities with a reason (Kafka 3.2+; consumer
/// groups, KIP-848, accept it since Kafka 3.7).
const LEAVE_GROUP_VERSION: i16 = 5;
/// `SaslHandshake` v1 (Kafka 1.0+: authentication in Kafka frames).
const SASL_HANDSHAKE_VERSION: i16 = 1;
/// `SaslAuthenticate` v2 (flexible; Kafka 2.4+).
const SASL_AUTHENTICATE_VERSION: i16 = 2;
/// `ConsumerGroupDescribe` v0 (Kafka 3.7+).
const CONSUMER_GROUP_DESCRIBE_VERSION: i16 = 0;
/// `FindCoordinator`'s key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// The largest response accepted: these are a few hundred bytes; a length
/// beyond this is not a Kafka response to us.
const RESPONSE_BYTES_MAX: usize = 16 << 20;
/// Pause before asking again a coordinator that is loading or moving.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A member of a group, as its `group.instance.id` and member id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupMember {
    pub instance_id: String,
    pub member_id: String,
}

/// What the coordinator did with one member of a removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Removed: its partitions are reassigned now.
    Removed,
    /// Not in the group (already gone: its session expired, or it left).
    NotMember,
    /// Its instance id belongs to another member now (a restarted process):
    /// nothing was removed.
    Replaced,
    /// Refused for another reason, named by the coordinator.
    Refused(String),
}

/// One member of a consumer-protocol group as the coordinator describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
}

/// Why a group request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GroupAdminError {
    #[error(
        "group requests outside librdkafka cannot connect as the client properties ask \
         ({0}), so a dead node's members are left to the group's session timeout"
    )]
    Security(#[from] super::broker_link::UnsupportedSecurity),
    #[error("logging in to {broker} with SASL {mechanism}: {reason}")]
    Login {
        broker: String,
        mechanism: &'static str,
        reason: String,
    },
    #[error("no bootstrap server in {bootstrap:?}")]
    NoBootstrap { bootstrap: String },
    #[error("{op} with {broker}: {source}")]
    Io {
        op: &'static str,
        broker: String,
        source: std::io::Error,
    },
    #[error("{op}: the coordinator answered {error} ({message})")]
    Refused {
        op: &'static str,
        error: String,
        message: String,
    },
    #[error("{op}: {reason}")]
    Protocol { op: &'static str, reason: String },
    #[error("{op} did not succeed within {timeout:?}; last error: {last}")]
    OutOfTime {
        op: &'static str,
        timeout: Duration,
        last: String,
    },
}

/// Removes `members` from `group`, naming `reason` to the coordinator (it
/// logs it). Returns what happened to each member, in order. Retries a
/// coordinator that is loading or has moved until `timeout`.
pub fn remove_group_members(
    settings: &KafkaSettings,
    group: &str,
    members: &[GroupMember],
    reason: &str,
    timeout: Duration,
) -> Result<Vec<(GroupMember, Removal)>, GroupAdminError> {
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_members(
            members
                .iter()
                .map(|m| {
                    MemberIdentity::default()
                        .with_member_id(StrBytes::from_string(m.member_id.clone()))
                        .with_group_instance_id(Some(StrBytes::from_string(m.instance_id.clone())))
                        .with_reason(Some(StrBytes::from_string(reason.to_string())))
                })
                .collect(),
        );
    let response = with_coordinator(settings, group, "LeaveGroup", timeout, |connection| {
        let response = connection.call(&request, LEAVE_GROUP_VERSION, "LeaveGroup")?;
        Ok(match response.error_code.err() {
            None => Answer::Done(response),
            // A group the coordinator does not know has none of them.
            Some(ResponseError::UnknownMemberId) | Some(ResponseError::GroupIdNotFound) => {
                Answer::Done(Default::default())
            }
            Some(e) => Answer::from_error(e, "LeaveGroup", &None)?,
        })
    })?;
    Ok(members
        .iter()
        .map(|member| {
            let answer = response.members.iter().find(|m| {
                m.group_instance_id.as_ref().map(StrBytes::as_str)
                    == Some(member.instance_id.as_str())
            });
            let removal = match answer.map(|m| m.error_code.err()) {
                // Every member of a known group is answered; an empty
                // answer is the unknown group above.
                None => Removal::NotMember,
                Some(None) => Removal::Removed,
                Some(Some(ResponseError::UnknownMemberId)) => Removal::NotMember,
                Some(Some(ResponseError::FencedInstanceId)) => Removal::Replaced,
                Some(Some(e)) => Removal::Refused(e.to_string()),
            };
            (member.clone(), removal)
        })
        .collect())
}

/// The members of consumer-protocol group `group` (none when it does not
/// exist).
pub fn describe_consumer_group(
    settings: &KafkaSettings,
    group: &str,
    timeout: Duration,
) -> Result<Vec<DescribedMember>, GroupAdminError> {
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    with_coordinator(
        settings,
        group,
        "ConsumerGroupDescribe",
        timeout,
        |connection| {
            let response = connection.call(
                &request,
                CONSUMER_GROUP_DESCRIBE_VERSION,
                "ConsumerGroupDescribe",
            )?;
            let Some(described) = response.groups.first() else {
                return Err(GroupAdminError::Protocol {
                    op: "ConsumerGroupDescribe",
                    reason: "the answer names no group".into(),
                });
            };
            Ok(match described.error_code.err() {
                None => Answer::Done(
                    described
                        .members
                        .iter()
                        .map(|m| DescribedMember {
                            member_id: m.member_id.as_str().to_string(),
                            instance_id: m.instance_id.as_ref().map(|s| s.as_str().to_string()),
                            member_epoch: m.member_epoch,
                            client_id: m.client_id.as_str().to_string(),
                        })
                        .collect(),
                ),
                Some(ResponseError::GroupIdNotFound) => Answer::Done(Vec::new()),
                Some(e) => {
                    Answer::from_error(e, "ConsumerGroupDescribe", &described.error_message)?
                }
            })
        },
    )
}

/// A coordinator's answer: done, or ask again (after finding it anew).
enum Answer<T> {
    Done(T),
    Again(String),
}

impl<T> Answer<T> {
    fn from_error(
        error: ResponseError,
        op: &'static str,
        message: &Option<StrBytes>,
    ) -> Result<Self, GroupAdminError> {
        let message = message
            .as_ref()
            .map_or_else(String::new, |m| m.as_str().to_string());
        if coordinator_moving(error) {
            Ok(Answer::Again(format!("{error} {message}")))
        } else {
            Err(GroupAdminError::Refused {
                op,
                error: error.to_string(),
                message,
            })
        }
    }
}

fn coordinator_moving(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotCoordinator
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::CoordinatorNotAvailable
    )
}

/// Finds `group`'s coordinator, connects and runs `ask` there; again, from
/// the lookup, while the coordinator is loading or has moved.
fn with_coordinator<T>(
    settings: &KafkaSettings,
    group: &str,
    op: &'static str,
    timeout: Duration,
    mut ask: impl FnMut(&mut Connection) -> Result<Answer<T>, GroupAdminError>,
) -> Result<T, GroupAdminError> {
    let security = BrokerSecurity::from_properties(&settings.client_properties)?;
    let bootstrap: Vec<&str> = settings
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if bootstrap.is_empty() {
        return Err(GroupAdminError::NoBootstrap {
            bootstrap: settings.bootstrap.clone(),
        });
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing tried");
    let mut round = 0usize;
    while Instant::now() < deadline {
        let server = bootstrap[round % bootstrap.len()];
        round += 1;
        let attempt = match find_coordinator(server, group, deadline, &security) {
            Ok(Answer::Done(coordinator)) => {
                Connection::open(&coordinator, deadline, &security).and_then(|mut c| ask(&mut c))
            }
            Ok(Answer::Again(why)) => Ok(Answer::Again(why)),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(Answer::Done(answer)) => return Ok(answer),
            Ok(Answer::Again(why)) => last = why,
            // A refused login is not retried: credentials do not get
            // better within the call.
            Err(e @ (GroupAdminError::Io { .. } | GroupAdminError::Protocol { .. })) => {
                last = e.to_string()
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
    Err(GroupAdminError::OutOfTime { op, timeout, last })
}

/// The `host:port` of `group`'s coordinator, asked of `server`.
fn find_coordinator(
    server: &str,
    group: &str,
    deadline: Instant,
    security: &BrokerSecurity,
) -> Result<Answer<String>, GroupAdminError> {
    let mut connection = Connection::open(server, deadline, security)?;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(KEY_TYPE_GROUP);
    let response = connection.call(&request, FIND_COORDINATOR_VERSION, "FindCoordinator")?;
    match response.error_code.err() {
        None => Ok(Answer::Done(format!(
            "{}:{}",
            response.host.as_str(),
            response.port
        ))),
        Some(e) => Answer::from_error(e, "FindCoordinator", &response.error_message),
    }
}

/// One blocking connection to a broker, for the duration of one call.
struct Connection {
    stream: BrokerStream,
    broker: String,
    correlation_id: i32,
    /// The caller's deadline: no read or write waits past it.
    deadline: Instant,
}

impl Connection {
    fn open(
        broker: &str,
        deadline: Instant,
        security: &BrokerSecurity,
    ) -> Result<Connection, GroupAdminError> {
        let io = |source| GroupAdminError::Io {
            op: "connecting",
            broker: broker.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = broker.to_socket_addrs().map_err(io)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(socket) => {
                    socket.set_nodelay(true).map_err(io)?;
                    let host = broker.rsplit_once(':').map_or(broker, |(host, _)| host);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let mut connection = Connection {
                        stream: security.wrap(host, socket).map_err(io)?,
                        broker: broker.to_string(),
                        correlation_id: 0,
                        deadline,
                    };
                    connection.log_in(security)?;
                    return Ok(connection);
                }
                Err(e) => last = e,
            }
        }
        Err(io(last))
    }

    /// The SASL login the properties ask for (`SaslHandshake` v1, then
    /// `SaslAuthenticate` v2 until the mechanism's exchange is complete).
    fn log_in(&mut self, security: &BrokerSecurity) -> Result<(), GroupAdminError> {
        let Some(login) = security.sasl() else {
            return Ok(());
        };
        let mechanism = login.mechanism.name();
        let broker = self.broker.clone();
        let refused = |reason: String| GroupAdminError::Login {
            broker: broker.clone(),
            mechanism,
            reason,
        };
        let handshake = self.call(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
            SASL_HANDSHAKE_VERSION,
            "SaslHandshake",
        )?;
        if let Some(e) = handshake.error_code.err() {
            return Err(refused(format!("the broker answered {e}")));
        }
        let mut exchange = SaslExchange::start(login).map_err(refused)?;
        let mut message = exchange.first();
        loop {
            let answer = self.call(
                &SaslAuthenticateRequest::default().with_auth_bytes(message.into()),
                SASL_AUTHENTICATE_VERSION,
                "SaslAuthenticate",
            )?;
            if let Some(e) = answer.error_code.err() {
                let detail = answer
                    .error_message
                    .as_ref()
                    .map_or_else(String::new, |m| format!(": {}", m.as_str()));
                return Err(refused(format!("the broker answered {e}{detail}")));
            }
            match exchange.answer(&answer.auth_bytes).map_err(refused)? {
                Some(next) => message = next,
                None => return Ok(()),
            }
        }
    }

    /// Sends `request` at `version` and reads its response.
    fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        op: &'static str,
    ) -> Result<R::Response, GroupAdminError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("tradeflow-group-admin")));
        let encoding = protocol_error(op, "encoding the request");
        let mut frame = vec![0u8; 4];
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(encoding)?;
        request.encode(&mut frame, version).map_err(encoding)?;
        let length = i32::try_from(frame.len() - 4).map_err(|_| GroupAdminError::Protocol {
            op,
            reason: "request too large".into(),
        })?;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        let io = |source| GroupAdminError::Io {
            op,
            broker: self.broker.clone(),
            source,
        };
        // No read or write waits past the caller's deadline (a zero
        // timeout means "none" to the socket, hence the 1 ms floor).
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream
            .socket()
            .set_read_timeout(Some(left))
            .map_err(io)?;
        self.stream
            .socket()
            .set_write_timeout(Some(left))
            .map_err(io)?;
        self.stream.write_all(&frame).map_err(io)?;
        self.stream.flush().map_err(io)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|&s| s <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| GroupAdminError::Protocol {
                op,
                reason: "the response's length is out of range".into(),
            })?;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).map_err(io)?;
        let decoding = protocol_error(op, "decoding the response");
        let mut bytes: &[u8] = &body;
        let answered = ResponseHeader::decode(
            &mut bytes,
            <R::Response as kafka_protocol::protocol::HeaderVersion>::header_version(version),
        )
        .map_err(decoding)?;
        if answered.correlation_id != self.correlation_id {
            return Err(GroupAdminError::Protocol {
                op,
                reason: format!(
                    "the response answers request {} instead of {}",
                    answered.correlation_id, self.correlation_id
                ),
            });
        }
        R::Response::decode(&mut bytes, version).map_err(decoding)
    }
}

/// Maps the codec's errors (the crate's `anyhow::Error`) to ours.
fn protocol_error<E: std::fmt::Display>(
    op: &'static str,
    doing: &'static str,
) -> impl Fn(E) -> GroupAdminError + Copy {
    move |e| GroupAdminError::Protocol {
        op,
        reason: format!("{doing}: {e}"),
    }
}
