//! The `in_process` mode (DESIGN §2): CPython embedded in this process, a pool of worker
//! threads each attached to the interpreter for life, and what a call crosses on its way:
//! the op rule ([`op_rules`]), the conversions between JSON values and Python objects
//! ([`convert`]), the reply slot a caller waits on ([`reply`]) and the spin-then-park waits
//! ([`spin`]).

pub mod convert;
pub mod interpreter;
pub mod invoker;
pub mod op_rules;
pub mod pool;
pub mod reply;
pub mod spin;
