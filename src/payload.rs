pub const MAX_DEPTH: usize = 256;
