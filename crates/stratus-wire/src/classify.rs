//! Statement classification: a hand-written MariaDB lexer, never a parser.
//!
//! For every SQL text it relays (`COM_QUERY` payloads) the proxy needs a few facts: may the
//! statement be re-run on a fresh backend when the first attempt's outcome is unknown, which
//! session state does it change that the proxy must remember and replay (user and system
//! variables, schema, prepared statements, transactions), and does it create state the proxy
//! cannot recreate (temporary tables, named and table locks, open handlers, XA transactions), so
//! that the session must stay pinned to its backend connection.
//!
//! This runs for every statement, so it reads the leading keywords once and then scans the rest
//! of the statement with the same lexer, looking only at a handful of token patterns (function
//! calls, `:=`, `INTO`, locking clauses). It allocates nothing but the names it returns, accepts
//! any bytes (the text is in the client's character set, not necessarily UTF-8; every non-ASCII
//! byte counts as part of an identifier) and never panics. When unsure it errs on the safe side:
//! a statement it cannot vouch for is not `read_only`.
//!
//! Lexing follows MariaDB: `-- `, `#` and `/* */` comments; executable comments `/*! */`,
//! `/*!50100 */`, `/*M! */`, `/*M!100100 */` whose content is code
//! (<https://mariadb.com/kb/en/comment-syntax/>); quoted strings with backslash escapes and
//! doubled quotes; backtick identifiers; user variables `@v`, `@'v'`; system variables
//! `@@v`, `@@session.v`, `@@global.v`; `;` between statements. `SET` is decoded assignment by
//! assignment, with a `GLOBAL`/`SESSION`/`LOCAL` keyword applying to the assignments after it
//! until the next keyword, as in the server (<https://mariadb.com/kb/en/set/>).
//!
//! Known approximations, all on the safe side or harmless:
//! * Executable comments run whatever their version, except version `999999`, which
//!   mariadb-dump writes for the client only (`/*!999999\- enable the sandbox mode */`) and no
//!   server executes.
//! * A stored function called unqualified (`SELECT f()`) is assumed free of side effects, as its
//!   name cannot be told from a built-in; a qualified call (`db.f()`) is not.
//! * A table named like a lock function and followed by `(` (`CREATE TABLE get_lock (...)`)
//!   reports the function's pin.
//! * A statement that has several pin (or unpin) reasons reports the first one seen.

use std::ops::Range;

/// What a statement is, as far as the proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Replace,
    Call,
    Do,
    Show,
    /// `DESCRIBE`, `DESC`, `EXPLAIN`.
    Describe,
    /// `WITH ...` (a CTE, usually followed by `SELECT`).
    With,
    Set,
    Use,
    /// `BEGIN [WORK]`, `START TRANSACTION ...`.
    Begin,
    Commit,
    /// `ROLLBACK` without `TO SAVEPOINT`.
    Rollback,
    /// `SAVEPOINT`, `ROLLBACK TO [SAVEPOINT]`, `RELEASE SAVEPOINT`.
    Savepoint,
    XA,
    /// `PREPARE name FROM ...`.
    Prepare,
    /// `EXECUTE name [USING ...]`.
    Execute,
    /// `DEALLOCATE PREPARE name`, `DROP PREPARE name`.
    Deallocate,
    LockTables,
    UnlockTables,
    /// `FLUSH TABLES ... WITH READ LOCK`.
    FlushTablesWithReadLock,
    /// `LOAD DATA [LOW_PRIORITY|CONCURRENT] [LOCAL] INFILE`.
    LoadData,
    LoadXml,
    /// `CREATE USER`, `ALTER USER`, `DROP USER`, `RENAME USER`, `SET PASSWORD`,
    /// `SET DEFAULT ROLE`, `GRANT`, `REVOKE`, `CREATE ROLE`, `DROP ROLE`. (`SET ROLE` is a
    /// [`Kind::Set`] that sets session state.)
    AccountManagement,
    /// `CREATE`/`ALTER`/`DROP`/`TRUNCATE`/`RENAME` of anything but accounts; temporary tables
    /// are told by [`Statement::pin`] / [`Statement::unpin`].
    Ddl,
    /// `HANDLER tbl OPEN/READ/CLOSE`.
    Handler,
    Kill,
    /// Only whitespace and comments.
    Empty,
    #[default]
    Other,
}

/// The facts the proxy needs about one statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statement {
    pub kind: Kind,
    /// Safe to re-run on a fresh backend if the first attempt's outcome is unknown: a plain read
    /// (`SELECT`, `SHOW`, `DESCRIBE`, `WITH ... SELECT`, `DO`) with no `INTO`, no `FOR UPDATE` /
    /// `FOR SHARE` / `LOCK IN SHARE MODE`, no `:=` and no call of a function with side or session
    /// effects (`GET_LOCK`, `RELEASE_LOCK`, `RELEASE_ALL_LOCKS`, `SLEEP`, `BENCHMARK`, `NEXTVAL`,
    /// `NEXT VALUE FOR`, `SETVAL`, `LAST_INSERT_ID(expr)`, `MASTER_POS_WAIT`,
    /// `MASTER_GTID_WAIT`, `LOAD_FILE`, qualified stored functions). False for everything else.
    pub read_only: bool,
    /// Assigns user variables: `SET @x = ...`, `SELECT ... INTO @x`, `:=` anywhere.
    /// (`SET @@x` is a system variable and does not count.)
    pub sets_user_vars: bool,
    /// For [`Kind::Set`]: assigns at least one session system variable (`SET x`, `SET SESSION x`,
    /// `SET LOCAL x`, `SET @@x`, `SET @@session.x`, `SET @@local.x`, `SET NAMES`,
    /// `SET CHARACTER SET`, `SET TRANSACTION`, `SET ROLE`). `SET STATEMENT ... FOR stmt` is
    /// classified as `stmt`, since it changes nothing beyond that statement.
    pub sets_session_vars: bool,
    /// `SET GLOBAL x`, `SET @@global.x`, `SET GLOBAL TRANSACTION`.
    pub sets_global_vars: bool,
    /// Session variables assigned as `SET @@x` or ``SET @@`x` `` (no scope; lower case): MariaDB's session
    /// tracking reports every other form of assignment but not this one, so whoever follows
    /// the session must ask for their values.
    pub untracked_vars: Vec<String>,
    /// `SET ROLE role` or `SET ROLE NONE` (<https://mariadb.com/kb/en/set-role/>): the session's
    /// current role, which no variable tracks.
    pub sets_role: bool,
    /// Session state the proxy cannot recreate: the session must stay on its backend.
    pub pin: Option<Pin>,
    /// Releases a pin reason (`UNLOCK TABLES`, `DROP TEMPORARY TABLE`, `RELEASE_LOCK`, ...).
    /// Reported whenever it may release one: whether it was the last is for the caller to know.
    pub unpin: Option<Pin>,
    /// The statement name of `PREPARE` / `EXECUTE` / `DEALLOCATE` (unquoted, original case).
    pub prepared_name: Option<String>,
    /// For `USE`: the schema name (unquoted).
    pub schema: Option<String>,
    /// Byte range of this statement in the input: from after the previous `;` to before the
    /// next one, without surrounding whitespace (comments are kept, so an executable comment
    /// stays whole).
    pub span: Range<usize>,
}

/// Why a session must stay on its backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// `CREATE [OR REPLACE] TEMPORARY TABLE` (or sequence).
    TempTable,
    /// `GET_LOCK(`.
    NamedLock,
    /// `LOCK TABLES`, `FLUSH TABLES WITH READ LOCK`, `FLUSH TABLES ... FOR EXPORT`, `BACKUP LOCK`.
    TableLock,
    /// `HANDLER ... OPEN`.
    Handler,
    /// `XA START` / `XA BEGIN`.
    Xa,
}

/// Classifies the first statement of `sql`: the fast path, for clients that did not enable
/// multi-statements. Anything after the first top-level `;` is ignored.
pub fn classify(sql: &[u8]) -> Statement {
    next_statement(&mut Lexer::new(sql))
}

/// Splits `sql` on top-level `;` and classifies each statement, dropping those that are only
/// whitespace and comments. For clients with `CLIENT_MULTI_STATEMENTS`.
pub fn classify_all(sql: &[u8]) -> Vec<Statement> {
    let mut lexer = Lexer::new(sql);
    let mut out = Vec::new();
    // Every call consumes at least one byte (a token, trivia or the `;`), so this ends.
    while lexer.pos < sql.len() {
        let statement = next_statement(&mut lexer);
        if statement.kind != Kind::Empty {
            out.push(statement);
        }
    }
    out
}

/// The `GET_LOCK` and `RELEASE_ALL_LOCKS` calls of one statement that [`classify`] found to
/// take or release named locks (<https://mariadb.com/kb/en/get_lock/>).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamedLockCalls {
    /// Each `GET_LOCK`'s name, in order: `Some` for a plain single-quoted ASCII literal without
    /// escapes (the same in any character set the connection may switch to), `None` for
    /// anything else (an expression, a variable, a `?`), which only the server knows.
    pub taken: Vec<Option<String>>,
    pub release_all: bool,
}

/// Reads the named-lock calls of one statement. Only for statements that call them: it lexes
/// the whole text again.
pub fn named_lock_calls(stmt: &[u8]) -> NamedLockCalls {
    let mut lx = Lexer::new(stmt);
    let mut calls = NamedLockCalls::default();
    // The two tokens before the current one: `GET_LOCK` `(` not after a `.` (`db.GET_LOCK` is
    // a stored function).
    let (mut before, mut prev) = (Tok::End, Tok::End);
    loop {
        let (_, tok) = lx.next();
        if tok == Tok::End || tok == Tok::Semi {
            return calls;
        }
        if let (Tok::Punct(b'('), Tok::Word(a, b)) = (tok, prev)
            && before != Tok::Punct(b'.')
        {
            let word = &stmt[a..b];
            if word.eq_ignore_ascii_case(b"GET_LOCK") {
                let (_, name) = lx.next();
                let (_, comma) = lx.next();
                let literal = match name {
                    Tok::Str(b'\'', a, b) if comma == Tok::Punct(b',') => {
                        let text = &stmt[a..b];
                        (text.is_ascii() && !text.contains(&b'\\') && !text.contains(&b'\''))
                            .then(|| String::from_utf8_lossy(text).into_owned())
                    }
                    _ => None,
                };
                calls.taken.push(literal);
                (before, prev) = (name, comma);
                continue;
            } else if word.eq_ignore_ascii_case(b"RELEASE_ALL_LOCKS") {
                calls.release_all = true;
            }
        }
        (before, prev) = (prev, tok);
    }
}

/// Classifies the statement at the lexer's position and leaves the lexer after its `;`.
fn next_statement(lexer: &mut Lexer<'_>) -> Statement {
    let s = lexer.s;
    let mut start = lexer.pos;
    let mut parser = Parser::new(*lexer);
    parser.run();
    *lexer = parser.lx;
    let mut end = parser.end;
    while start < end && is_space(s[start]) {
        start += 1;
    }
    while end > start && is_space(s[end - 1]) {
        end -= 1;
    }
    let mut statement = parser.st;
    statement.span = start..end;
    statement
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

/// A lexical token. Ranges are byte offsets into the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// An unquoted word: keyword, identifier or number.
    Word(usize, usize),
    /// A backtick-quoted identifier; the range of its content, doubled backticks not collapsed.
    Quoted(usize, usize),
    /// A `'...'` or `"..."` string: the quote and the range of its content, escapes kept.
    Str(u8, usize, usize),
    /// `@name`, `@'name'`, `@"name"`, `` @`name` ``.
    UserVar,
    /// `@@name`, `@@session.name`, `@@local.name`, `@@global.name`; for `@@name`, the range of
    /// the name (empty for a quoted or structured one).
    SysVar(Scope, usize, usize),
    /// `:=`.
    Assign,
    /// Any other single byte.
    Punct(u8),
    /// `;` outside strings and comments.
    Semi,
    /// End of input (or, from [`Parser::next`], end of statement).
    End,
}

/// The scope written in a system variable reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `@@name`: the session value.
    Default,
    /// `@@session.` or `@@local.`.
    Session,
    /// `@@global.`.
    Global,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Bytes of unquoted identifiers; any non-ASCII byte counts, whatever the character set.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Version tag of executable comments meant for the client only: no server runs them.
const CLIENT_ONLY_VERSION: &[u8] = b"999999";

#[derive(Debug, Clone, Copy)]
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    /// Inside `/*! ... */`: the next `*/` closes it instead of being two punctuation bytes.
    in_exec: bool,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lexer {
            s,
            pos: 0,
            in_exec: false,
        }
    }

    fn byte(&self, offset: usize) -> Option<u8> {
        self.s.get(self.pos + offset).copied()
    }

    /// Returns the next token and where it starts.
    fn next(&mut self) -> (usize, Tok) {
        self.skip_trivia();
        let start = self.pos;
        let Some(b) = self.byte(0) else {
            return (start, Tok::End);
        };
        let tok = match b {
            b';' => {
                self.pos += 1;
                Tok::Semi
            }
            b'\'' | b'"' => Tok::Str(b, start + 1, self.skip_quoted(b, true)),
            b'`' => Tok::Quoted(start + 1, self.skip_quoted(b'`', false)),
            b'@' => self.variable(),
            b':' if self.byte(1) == Some(b'=') => {
                self.pos += 2;
                Tok::Assign
            }
            _ if is_ident(b) => {
                self.skip_ident();
                Tok::Word(start, self.pos)
            }
            _ => {
                self.pos += 1;
                Tok::Punct(b)
            }
        };
        (start, tok)
    }

    /// Skips whitespace, comments, and the openings and closings of executable comments.
    fn skip_trivia(&mut self) {
        while let Some(b) = self.byte(0) {
            match b {
                _ if is_space(b) => self.pos += 1,
                b'#' => self.skip_line(),
                // `--` starts a comment only when followed by whitespace, a control byte or the end.
                b'-' if self.byte(1) == Some(b'-') && self.byte(2).is_none_or(|c| c <= b' ') => {
                    self.skip_line()
                }
                b'/' if self.byte(1) == Some(b'*') => self.block_comment(),
                b'*' if self.in_exec && self.byte(1) == Some(b'/') => {
                    self.pos += 2;
                    self.in_exec = false;
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        self.pos = match self.s[self.pos..].iter().position(|&b| b == b'\n') {
            Some(i) => self.pos + i + 1,
            None => self.s.len(),
        };
    }

    /// At `/*`: enters an executable comment, or skips a plain one (unterminated: to the end).
    fn block_comment(&mut self) {
        let body = self.pos + 2;
        let code = match (self.s.get(body), self.s.get(body + 1)) {
            (Some(b'!'), _) => Some(body + 1),
            (Some(b'M'), Some(b'!')) => Some(body + 2),
            _ => None,
        };
        if let Some(code) = code {
            // As in the server: five digits are a version, and a sixth belongs to it.
            let rest = &self.s[code..];
            let digits = rest
                .iter()
                .take(6)
                .take_while(|b| b.is_ascii_digit())
                .count();
            let version = if digits >= 5 { digits } else { 0 };
            if &rest[..version] != CLIENT_ONLY_VERSION {
                self.pos = code + version;
                self.in_exec = true;
                return;
            }
        }
        self.pos = match self.s[body..].windows(2).position(|w| w == b"*/") {
            Some(i) => body + i + 2,
            None => self.s.len(),
        };
    }

    fn skip_ident(&mut self) {
        let run = self.s[self.pos..]
            .iter()
            .take_while(|&&b| is_ident(b))
            .count();
        self.pos += run;
    }

    /// At an opening quote `q`: moves past the closing quote (unterminated: to the end) and
    /// returns where the content ends. Doubled quotes, and with `backslash` `\x`, are content.
    fn skip_quoted(&mut self, q: u8, backslash: bool) -> usize {
        let mut i = self.pos + 1;
        while let Some(&c) = self.s.get(i) {
            if c == b'\\' && backslash {
                i += 2;
            } else if c == q {
                if self.s.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    self.pos = i + 1;
                    return i;
                }
            } else {
                i += 1;
            }
        }
        self.pos = self.s.len();
        self.s.len()
    }

    /// At `@`: a user variable, a system variable, or a lone `@`.
    fn variable(&mut self) -> Tok {
        match self.byte(1) {
            Some(b'@') => {
                self.pos += 2;
                let first = self.pos;
                let quoted = self.name_part();
                let mut name = match quoted {
                    false => (first, self.pos),
                    // `` @@`x` ``: the name inside, if closed and without a doubled backtick.
                    true => {
                        let inner = self.s.get(first + 1..self.pos.saturating_sub(1));
                        match inner {
                            Some(i) if self.s[self.pos - 1] == b'`' && !i.contains(&b'`') => {
                                (first + 1, self.pos - 1)
                            }
                            _ => (first, first),
                        }
                    }
                };
                let mut scope = Scope::Default;
                if !quoted && self.byte(0) == Some(b'.') {
                    let word = &self.s[first..self.pos];
                    if word.eq_ignore_ascii_case(b"GLOBAL") {
                        scope = Scope::Global;
                    } else if word.eq_ignore_ascii_case(b"SESSION")
                        || word.eq_ignore_ascii_case(b"LOCAL")
                    {
                        scope = Scope::Session;
                    }
                }
                // Structured variables have more parts: `@@global.hot_cache.key_buffer_size`.
                while self.byte(0) == Some(b'.') {
                    self.pos += 1;
                    self.name_part();
                    name = (first, first);
                }
                Tok::SysVar(scope, name.0, name.1)
            }
            Some(q @ (b'\'' | b'"' | b'`')) => {
                self.pos += 1;
                self.skip_quoted(q, q != b'`');
                Tok::UserVar
            }
            Some(c) if is_ident(c) || c == b'.' => {
                self.pos += 1;
                let run = self.s[self.pos..]
                    .iter()
                    .take_while(|&&b| is_ident(b) || b == b'.')
                    .count();
                self.pos += run;
                Tok::UserVar
            }
            _ => {
                self.pos += 1;
                Tok::Punct(b'@')
            }
        }
    }

    /// Skips one part of a dotted name; returns whether it was backtick-quoted.
    fn name_part(&mut self) -> bool {
        if self.byte(0) == Some(b'`') {
            self.skip_quoted(b'`', false);
            true
        } else {
            self.skip_ident();
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Classifier
// ---------------------------------------------------------------------------------------------

/// Longest keyword matched here (`NO_WRITE_TO_BINLOG`), rounded up.
const KW_MAX: usize = 20;

/// A word upper-cased into a stack buffer, so keywords can be `match`ed without allocating.
/// Words longer than any keyword come out empty and match nothing.
struct Upper {
    buf: [u8; KW_MAX],
    len: usize,
}

impl Upper {
    fn new(word: &[u8]) -> Self {
        let mut buf = [0; KW_MAX];
        let len = if word.len() <= KW_MAX { word.len() } else { 0 };
        buf[..len].copy_from_slice(&word[..len]);
        buf[..len].make_ascii_uppercase();
        Upper { buf, len }
    }

    fn get(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the previous token makes of the next one, for the patterns looked for anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    None,
    /// `INTO`: a user variable next is `SELECT ... INTO @v`.
    Into,
    /// `FOR`: `UPDATE` or `SHARE` next is a locking read.
    For,
    /// `LOCK`: `IN` next is `LOCK IN SHARE MODE`.
    Lock,
    /// `NEXT`: `VALUE` next is `NEXT VALUE FOR seq`, which advances the sequence.
    Next,
    /// `INSERT` / `REPLACE`: a write unless `(` follows (then it is the string function).
    WriteVerb,
    /// `LAST_INSERT_ID(`: anything but `)` next is an argument, which sets the value.
    LastInsertIdArgs,
}

/// Whether the head parser is done or found `SET STATEMENT ... FOR` and must classify what
/// follows as the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Done,
    Restart,
}

struct Parser<'a> {
    lx: Lexer<'a>,
    peeked: Option<Tok>,
    /// The statement's `;` or the end of input was reached: only `End` from now on.
    done: bool,
    /// Where the statement ends: its `;` or the end of input.
    end: usize,
    st: Statement,
    /// Parenthesis depth, to find top-level commas in `SET` and `FOR` in `SET STATEMENT`.
    depth: u32,
    prev: Tok,
    prev_ctx: Ctx,
    /// The token before `prev` was `.`: `prev` is the second part of a qualified name.
    prev_after_dot: bool,
    /// The next `:=` is a `SET` assignment operator, not an assignment inside an expression.
    suppress_assign: bool,
    /// Side or session effects that no read can have (function calls, `:=`).
    effects: bool,
    /// Writes and locking clauses (`INTO`, `FOR UPDATE`, `UPDATE`, ...); harmless under `EXPLAIN`.
    dml: bool,
    /// `EXPLAIN ANALYZE` / `DESCRIBE ANALYZE`: the explained statement runs.
    analyze: bool,
}

impl<'a> Parser<'a> {
    fn new(lx: Lexer<'a>) -> Self {
        Parser {
            lx,
            peeked: None,
            done: false,
            end: lx.s.len(),
            st: Statement::default(),
            depth: 0,
            prev: Tok::End,
            prev_ctx: Ctx::None,
            prev_after_dot: false,
            suppress_assign: false,
            effects: false,
            dml: false,
            analyze: false,
        }
    }

    fn run(&mut self) {
        let mut first = true;
        while self.head(first) == Flow::Restart {
            first = false;
        }
        while self.next() != Tok::End {}
        let plain =
            !self.effects && (!self.dml || (self.st.kind == Kind::Describe && !self.analyze));
        self.st.read_only = plain
            && matches!(
                self.st.kind,
                Kind::Select | Kind::Show | Kind::Describe | Kind::With | Kind::Do
            );
    }

    fn text(&self, a: usize, b: usize) -> &'a [u8] {
        let s: &'a [u8] = self.lx.s;
        &s[a..b]
    }

    /// Next token of this statement, without looking at it for the anywhere-patterns.
    fn lex(&mut self) -> Tok {
        if self.done {
            return Tok::End;
        }
        let (start, tok) = self.lx.next();
        match tok {
            Tok::Semi | Tok::End => {
                self.done = true;
                self.end = start;
                Tok::End
            }
            tok => tok,
        }
    }

    fn peek(&mut self) -> Tok {
        match self.peeked {
            Some(tok) => tok,
            None => {
                let tok = self.lex();
                self.peeked = Some(tok);
                tok
            }
        }
    }

    /// Consumes the next token; every token passes through [`Parser::observe`] exactly once.
    fn next(&mut self) -> Tok {
        let tok = match self.peeked.take() {
            Some(tok) => tok,
            None => self.lex(),
        };
        self.observe(tok);
        tok
    }

    fn is_word(&self, tok: Tok, keywords: &[&[u8]]) -> bool {
        match tok {
            Tok::Word(a, b) => {
                let word = self.text(a, b);
                keywords.iter().any(|k| word.eq_ignore_ascii_case(k))
            }
            _ => false,
        }
    }

    fn peek_is(&mut self, keywords: &[&[u8]]) -> bool {
        let tok = self.peek();
        self.is_word(tok, keywords)
    }

    /// Consumes the next token if it is one of `keywords`.
    fn eat(&mut self, keywords: &[&[u8]]) -> bool {
        let found = self.peek_is(keywords);
        if found {
            self.next();
        }
        found
    }

    fn pin(&mut self, pin: Pin) {
        self.st.pin.get_or_insert(pin);
    }

    fn unpin(&mut self, pin: Pin) {
        self.st.unpin.get_or_insert(pin);
    }

    /// The patterns that matter wherever they are: function calls, `:=`, `INTO @v`, locking
    /// clauses and write verbs. Looks only at this token and the one before, so it costs a
    /// few comparisons per token.
    fn observe(&mut self, tok: Tok) {
        let open = tok == Tok::Punct(b'(');
        match self.prev_ctx {
            Ctx::WriteVerb if !open => self.dml = true,
            Ctx::LastInsertIdArgs if tok != Tok::Punct(b')') => self.effects = true,
            _ => {}
        }
        let mut ctx = Ctx::None;
        match tok {
            Tok::Punct(b'(') => {
                self.depth = self.depth.saturating_add(1);
                if let Tok::Word(a, b) = self.prev {
                    if self.prev_after_dot {
                        // `db.f(`: a stored function, which may do anything.
                        self.effects = true;
                    } else {
                        ctx = self.call(a, b);
                    }
                }
            }
            Tok::Punct(b')') => self.depth = self.depth.saturating_sub(1),
            Tok::Assign if !self.suppress_assign => {
                self.st.sets_user_vars = true;
                self.effects = true;
            }
            Tok::UserVar if self.prev_ctx == Ctx::Into => self.st.sets_user_vars = true,
            Tok::Word(a, b) => {
                let upper = Upper::new(self.text(a, b));
                let word = upper.get();
                match (self.prev_ctx, word) {
                    (Ctx::For, b"UPDATE" | b"SHARE") | (Ctx::Lock, b"IN") => self.dml = true,
                    (Ctx::Next, b"VALUE") => self.effects = true,
                    _ => {}
                }
                ctx = match word {
                    b"INTO" => {
                        self.dml = true;
                        Ctx::Into
                    }
                    b"FOR" => Ctx::For,
                    b"LOCK" => Ctx::Lock,
                    b"NEXT" => Ctx::Next,
                    b"UPDATE" | b"DELETE" => {
                        self.dml = true;
                        Ctx::None
                    }
                    b"INSERT" | b"REPLACE" => Ctx::WriteVerb,
                    _ => Ctx::None,
                };
            }
            _ => {}
        }
        self.prev_after_dot = self.prev == Tok::Punct(b'.');
        self.prev = tok;
        self.prev_ctx = ctx;
    }

    /// A call of the function named by the word at `a..b`.
    fn call(&mut self, a: usize, b: usize) -> Ctx {
        match Upper::new(self.text(a, b)).get() {
            b"GET_LOCK" => {
                self.effects = true;
                self.pin(Pin::NamedLock);
            }
            b"RELEASE_LOCK" | b"RELEASE_ALL_LOCKS" => {
                self.effects = true;
                self.unpin(Pin::NamedLock);
            }
            b"SLEEP" | b"BENCHMARK" | b"NEXTVAL" | b"SETVAL" | b"MASTER_POS_WAIT"
            | b"MASTER_GTID_WAIT" | b"SOURCE_POS_WAIT" | b"LOAD_FILE" => self.effects = true,
            b"LAST_INSERT_ID" => return Ctx::LastInsertIdArgs,
            _ => {}
        }
        Ctx::None
    }

    /// Reads the leading keywords and sets the kind and what the keywords tell.
    fn head(&mut self, first: bool) -> Flow {
        let mut tok = self.next();
        if first && tok == Tok::End {
            self.st.kind = Kind::Empty;
            return Flow::Done;
        }
        // `(SELECT 1) UNION (SELECT 2)`
        while tok == Tok::Punct(b'(') {
            tok = self.next();
        }
        let Tok::Word(a, b) = tok else {
            self.st.kind = Kind::Other;
            return Flow::Done;
        };
        self.st.kind = match Upper::new(self.text(a, b)).get() {
            b"SELECT" | b"VALUES" => Kind::Select,
            b"WITH" => Kind::With,
            b"SHOW" => Kind::Show,
            b"DESCRIBE" | b"DESC" | b"EXPLAIN" => {
                self.analyze = self.peek_is(&[b"ANALYZE"]);
                Kind::Describe
            }
            b"DO" => Kind::Do,
            b"INSERT" => Kind::Insert,
            b"UPDATE" => Kind::Update,
            b"DELETE" => Kind::Delete,
            b"REPLACE" => Kind::Replace,
            b"CALL" => Kind::Call,
            b"SET" => return self.set(),
            b"USE" => {
                self.st.schema = self.name();
                Kind::Use
            }
            b"BEGIN" => {
                // Anything else after BEGIN is a compound statement (`BEGIN NOT ATOMIC`).
                self.eat(&[b"WORK"]);
                if self.peek() == Tok::End {
                    Kind::Begin
                } else {
                    Kind::Other
                }
            }
            b"START" if self.peek_is(&[b"TRANSACTION"]) => Kind::Begin,
            b"COMMIT" => Kind::Commit,
            b"ROLLBACK" => {
                self.eat(&[b"WORK"]);
                if self.peek_is(&[b"TO"]) {
                    Kind::Savepoint
                } else {
                    Kind::Rollback
                }
            }
            b"SAVEPOINT" => Kind::Savepoint,
            b"RELEASE" if self.peek_is(&[b"SAVEPOINT"]) => Kind::Savepoint,
            b"XA" => {
                if self.eat(&[b"START", b"BEGIN"]) {
                    self.pin(Pin::Xa);
                } else if self.eat(&[b"COMMIT", b"ROLLBACK"]) {
                    self.unpin(Pin::Xa);
                }
                Kind::XA
            }
            b"PREPARE" => {
                self.st.prepared_name = self.name();
                Kind::Prepare
            }
            // `EXECUTE IMMEDIATE 'sql'` runs dynamic SQL that cannot be seen from here.
            b"EXECUTE" if self.peek_is(&[b"IMMEDIATE"]) => Kind::Other,
            b"EXECUTE" => {
                self.st.prepared_name = self.name();
                Kind::Execute
            }
            b"DEALLOCATE" => {
                self.eat(&[b"PREPARE"]);
                self.st.prepared_name = self.name();
                Kind::Deallocate
            }
            b"LOCK" if self.peek_is(&[b"TABLE", b"TABLES"]) => {
                self.pin(Pin::TableLock);
                Kind::LockTables
            }
            b"UNLOCK" if self.peek_is(&[b"TABLE", b"TABLES"]) => {
                self.unpin(Pin::TableLock);
                Kind::UnlockTables
            }
            b"FLUSH" => self.flush(),
            b"LOAD" if self.peek_is(&[b"DATA"]) => Kind::LoadData,
            b"LOAD" if self.peek_is(&[b"XML"]) => Kind::LoadXml,
            b"CREATE" => {
                if self.eat(&[b"OR"]) {
                    self.eat(&[b"REPLACE"]);
                }
                if self.peek_is(&[b"USER", b"ROLE"]) {
                    Kind::AccountManagement
                } else {
                    if self.peek_is(&[b"TEMPORARY"]) {
                        self.pin(Pin::TempTable);
                    }
                    Kind::Ddl
                }
            }
            b"DROP" => {
                if self.peek_is(&[b"USER", b"ROLE"]) {
                    Kind::AccountManagement
                } else if self.eat(&[b"PREPARE"]) {
                    self.st.prepared_name = self.name();
                    Kind::Deallocate
                } else {
                    if self.peek_is(&[b"TEMPORARY"]) {
                        self.unpin(Pin::TempTable);
                    }
                    Kind::Ddl
                }
            }
            b"ALTER" | b"RENAME" if self.peek_is(&[b"USER"]) => Kind::AccountManagement,
            b"ALTER" | b"RENAME" | b"TRUNCATE" => Kind::Ddl,
            b"GRANT" | b"REVOKE" => Kind::AccountManagement,
            b"HANDLER" => {
                self.handler();
                Kind::Handler
            }
            b"KILL" => Kind::Kill,
            b"BACKUP" => {
                if self.eat(&[b"LOCK"]) {
                    self.pin(Pin::TableLock);
                } else if self.eat(&[b"UNLOCK"]) {
                    self.unpin(Pin::TableLock);
                }
                Kind::Other
            }
            _ => Kind::Other,
        };
        Flow::Done
    }

    /// A name after `USE`, `PREPARE`, `EXECUTE`, `DEALLOCATE PREPARE`: unquoted, as text.
    fn name(&mut self) -> Option<String> {
        let name = match self.peek() {
            Tok::Word(a, b) => String::from_utf8_lossy(self.text(a, b)).into_owned(),
            Tok::Quoted(a, b) => unquote(self.text(a, b), b'`'),
            // An identifier under `ANSI_QUOTES`.
            Tok::Str(b'"', a, b) => unquote(self.text(a, b), b'"'),
            _ => return None,
        };
        self.next();
        Some(name)
    }

    /// `HANDLER tbl OPEN | READ | CLOSE`, where `tbl` may be qualified.
    fn handler(&mut self) {
        self.next();
        while self.peek() == Tok::Punct(b'.') {
            self.next();
            self.next();
        }
        if self.eat(&[b"OPEN"]) {
            self.pin(Pin::Handler);
        } else if self.eat(&[b"CLOSE"]) {
            self.unpin(Pin::Handler);
        }
    }

    /// `FLUSH [NO_WRITE_TO_BINLOG | LOCAL] TABLES ... {WITH READ LOCK | FOR EXPORT}`: both keep
    /// table locks until `UNLOCK TABLES`.
    fn flush(&mut self) -> Kind {
        self.eat(&[b"NO_WRITE_TO_BINLOG", b"LOCAL"]);
        if !self.eat(&[b"TABLE", b"TABLES"]) {
            return Kind::Other;
        }
        let mut kind = Kind::Other;
        let (mut with, mut with_read, mut for_) = (false, false, false);
        loop {
            let tok = self.next();
            if tok == Tok::End {
                return kind;
            }
            if with_read && self.is_word(tok, &[b"LOCK"]) {
                kind = Kind::FlushTablesWithReadLock;
                self.pin(Pin::TableLock);
            }
            if for_ && self.is_word(tok, &[b"EXPORT"]) {
                self.pin(Pin::TableLock);
            }
            with_read = with && self.is_word(tok, &[b"READ"]);
            with = self.is_word(tok, &[b"WITH"]);
            for_ = self.is_word(tok, &[b"FOR"]);
        }
    }

    /// After `SET`: every form of <https://mariadb.com/kb/en/set/>.
    fn set(&mut self) -> Flow {
        self.st.kind = Kind::Set;
        let base = self.depth;
        // Forms that are a statement of their own rather than a list of assignments.
        if self.eat(&[b"STATEMENT"]) {
            return self.set_statement(base);
        }
        if self.peek_is(&[b"PASSWORD"]) {
            self.st.kind = Kind::AccountManagement;
            return Flow::Done;
        }
        if self.peek_is(&[b"ROLE"]) {
            self.st.sets_session_vars = true;
            self.st.sets_role = true;
            return Flow::Done;
        }
        if self.eat(&[b"DEFAULT"]) {
            if self.peek_is(&[b"ROLE"]) {
                self.st.kind = Kind::AccountManagement;
                return Flow::Done;
            }
            // `SET default.key_buffer_size = ...`: the default key cache.
            self.st.sets_session_vars = true;
            self.assignment(base);
        }
        // Scope keywords stick to the assignments after them.
        let mut global = false;
        loop {
            let tok = self.next();
            match tok {
                Tok::End => return Flow::Done,
                Tok::Punct(b',') => {}
                Tok::UserVar => {
                    self.st.sets_user_vars = true;
                    self.assignment(base);
                }
                Tok::SysVar(scope, a, b) => {
                    self.mark_scope(scope == Scope::Global);
                    if scope == Scope::Default && a < b {
                        let name = self.text(a, b).to_ascii_lowercase();
                        self.st
                            .untracked_vars
                            .push(String::from_utf8_lossy(&name).into_owned());
                    }
                    self.assignment(base);
                }
                Tok::Word(a, b) => match Upper::new(self.text(a, b)).get() {
                    b"GLOBAL" => global = true,
                    b"SESSION" | b"LOCAL" => global = false,
                    // Characteristics of the next transaction (or, with a scope, of all).
                    b"TRANSACTION" => {
                        self.mark_scope(global);
                        return Flow::Done;
                    }
                    // `NAMES cs [COLLATE c]`, `CHARACTER SET cs`, `CHARSET cs`: no `=`.
                    b"NAMES" | b"CHARACTER" | b"CHARSET" => {
                        self.st.sets_session_vars = true;
                        self.value(base);
                    }
                    _ => {
                        self.mark_scope(global);
                        self.assignment(base);
                    }
                },
                Tok::Quoted(..) => {
                    self.mark_scope(global);
                    self.assignment(base);
                }
                _ => self.value(base),
            }
        }
    }

    fn mark_scope(&mut self, global: bool) {
        if global {
            self.st.sets_global_vars = true;
        } else {
            self.st.sets_session_vars = true;
        }
    }

    /// The rest of a `SET` assignment after the variable's first token: the rest of its name,
    /// the `=` or `:=` (which is not a user-variable assignment inside an expression) and the
    /// value, up to the next top-level comma.
    fn assignment(&mut self, base: u32) {
        loop {
            match self.peek() {
                Tok::End => return,
                Tok::Punct(b',') if self.depth == base => return,
                Tok::Punct(b'=') => {
                    self.next();
                    break;
                }
                Tok::Assign => {
                    self.suppress_assign = true;
                    self.next();
                    self.suppress_assign = false;
                    break;
                }
                _ => {
                    self.next();
                }
            }
        }
        self.value(base);
    }

    /// Skips an expression up to and including the next comma at depth `base`.
    fn value(&mut self, base: u32) {
        loop {
            match self.next() {
                Tok::End => return,
                Tok::Punct(b',') if self.depth == base => return,
                _ => {}
            }
        }
    }

    /// `SET STATEMENT var = value [, ...] FOR stmt`: skips to the top-level `FOR`, after which
    /// `stmt` is classified as the statement itself.
    fn set_statement(&mut self, base: u32) -> Flow {
        let mut in_value = false;
        loop {
            match self.peek() {
                Tok::End => return Flow::Done,
                Tok::Assign if !in_value => {
                    self.suppress_assign = true;
                    self.next();
                    self.suppress_assign = false;
                    in_value = true;
                }
                Tok::Punct(b'=') if !in_value => {
                    self.next();
                    in_value = true;
                }
                Tok::Punct(b',') if self.depth == base => {
                    self.next();
                    in_value = false;
                }
                tok if in_value && self.depth == base && self.is_word(tok, &[b"FOR"]) => {
                    self.next();
                    return Flow::Restart;
                }
                _ => {
                    self.next();
                }
            }
        }
    }
}

/// The text of a quoted name, with doubled quotes collapsed.
fn unquote(raw: &[u8], q: u8) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        out.push(c);
        i += if c == q { 2 } else { 1 };
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::*;
    use proptest::prelude::*;

    /// Expected classification, built with short chained setters.
    #[derive(Debug, Clone)]
    struct Exp {
        kind: Kind,
        ro: bool,
        uv: bool,
        sv: bool,
        gv: bool,
        pin: Option<Pin>,
        unpin: Option<Pin>,
        name: Option<&'static str>,
        schema: Option<&'static str>,
    }

    fn k(kind: Kind) -> Exp {
        Exp {
            kind,
            ro: false,
            uv: false,
            sv: false,
            gv: false,
            pin: None,
            unpin: None,
            name: None,
            schema: None,
        }
    }

    impl Exp {
        fn ro(mut self) -> Self {
            self.ro = true;
            self
        }
        fn uv(mut self) -> Self {
            self.uv = true;
            self
        }
        fn sv(mut self) -> Self {
            self.sv = true;
            self
        }
        fn gv(mut self) -> Self {
            self.gv = true;
            self
        }
        fn pin(mut self, pin: Pin) -> Self {
            self.pin = Some(pin);
            self
        }
        fn unpin(mut self, pin: Pin) -> Self {
            self.unpin = Some(pin);
            self
        }
        fn name(mut self, name: &'static str) -> Self {
            self.name = Some(name);
            self
        }
        fn schema(mut self, schema: &'static str) -> Self {
            self.schema = Some(schema);
            self
        }
    }

    fn check(sql: &[u8], exp: &Exp) {
        let st = classify(sql);
        let got = (
            st.kind,
            st.read_only,
            st.sets_user_vars,
            st.sets_session_vars,
            st.sets_global_vars,
            st.pin,
            st.unpin,
            st.prepared_name.as_deref(),
            st.schema.as_deref(),
        );
        let want = (
            exp.kind, exp.ro, exp.uv, exp.sv, exp.gv, exp.pin, exp.unpin, exp.name, exp.schema,
        );
        assert_eq!(
            got,
            want,
            "{:?}\n(kind, read_only, user, session, global, pin, unpin, name, schema)",
            String::from_utf8_lossy(sql)
        );
        assert!(st.span.start <= st.span.end && st.span.end <= sql.len());
    }

    fn table() -> Vec<(&'static str, Exp)> {
        use Pin::*;
        vec![
            // Reads, and what disqualifies them.
            ("SELECT 1", k(Select).ro()),
            ("select * from t where a = 'x;y'", k(Select).ro()),
            ("(SELECT 1) UNION (SELECT 2)", k(Select).ro()),
            ("VALUES (1), (2)", k(Select).ro()),
            ("SELECT 1 FOR UPDATE", k(Select)),
            (
                "SELECT * FROM t WHERE a = 1 FOR UPDATE SKIP LOCKED",
                k(Select),
            ),
            ("SELECT * FROM t LOCK IN SHARE MODE", k(Select)),
            ("SELECT * FROM t FOR SHARE", k(Select)),
            ("SELECT * FROM t FOR SYSTEM_TIME ALL", k(Select).ro()),
            ("select sleep(1)", k(Select)),
            ("SELECT SLEEP /* c */ (1)", k(Select)),
            ("SELECT my_sleep(1), sleepy(2)", k(Select).ro()),
            ("SELECT `sleep`(1)", k(Select).ro()),
            ("SELECT 'sleep(1)', \"get_lock(\"", k(Select).ro()),
            ("SELECT /* sleep(1) */ 1", k(Select).ro()),
            ("SELECT 1 -- FOR UPDATE", k(Select).ro()),
            ("SELECT 1 #sleep(1)", k(Select).ro()),
            // `--` without a space is two minus signs.
            ("SELECT 1 --sleep(1)", k(Select)),
            (
                "SELECT COUNT(*), NOW(), CONCAT('a', 'b') FROM t",
                k(Select).ro(),
            ),
            ("SELECT GET_LOCK('a', 1)", k(Select).pin(NamedLock)),
            ("SELECT get_lock ('a', 1)", k(Select).pin(NamedLock)),
            ("SELECT RELEASE_LOCK('a')", k(Select).unpin(NamedLock)),
            ("DO RELEASE_ALL_LOCKS()", k(Do).unpin(NamedLock)),
            (
                "SELECT IS_USED_LOCK('a'), IS_FREE_LOCK('b')",
                k(Select).ro(),
            ),
            ("SELECT BENCHMARK(10, MD5('x'))", k(Select)),
            ("SELECT NEXTVAL(s)", k(Select)),
            ("SELECT NEXT VALUE FOR s", k(Select)),
            ("SELECT SETVAL(s, 10)", k(Select)),
            ("SELECT LASTVAL(s), PREVIOUS VALUE FOR s", k(Select).ro()),
            ("SELECT LAST_INSERT_ID()", k(Select).ro()),
            ("SELECT LAST_INSERT_ID(5)", k(Select)),
            ("SELECT MASTER_POS_WAIT('f', 4)", k(Select)),
            ("SELECT MASTER_GTID_WAIT('0-1-1')", k(Select)),
            ("SELECT LOAD_FILE('/etc/passwd')", k(Select)),
            ("SELECT db.f(1)", k(Select)),
            ("SELECT t.a, db.t.b FROM db.t", k(Select).ro()),
            ("SELECT @a := 1", k(Select).uv()),
            ("SELECT @a, @@sql_mode, @@session.time_zone", k(Select).ro()),
            ("SELECT a INTO @x FROM t", k(Select).uv()),
            ("SELECT a, b FROM t INTO @x, @y", k(Select).uv()),
            ("SELECT a FROM t INTO OUTFILE '/tmp/x'", k(Select)),
            ("SELECT a INTO DUMPFILE '/tmp/x' FROM t", k(Select)),
            ("WITH x AS (SELECT 1) SELECT * FROM x", k(With).ro()),
            (
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
                k(With).ro(),
            ),
            ("WITH x AS (SELECT 1) UPDATE t, x SET t.a = 1", k(With)),
            ("WITH x AS (SELECT 1) DELETE FROM t", k(With)),
            (
                "WITH x AS (SELECT INSERT('abc', 1, 1, 'z')) SELECT * FROM x",
                k(With).ro(),
            ),
            ("SHOW TABLES", k(Show).ro()),
            ("show full processlist", k(Show).ro()),
            ("DESCRIBE t", k(Describe).ro()),
            ("DESC t", k(Describe).ro()),
            ("EXPLAIN SELECT * FROM t", k(Describe).ro()),
            ("EXPLAIN UPDATE t SET a = 1", k(Describe).ro()),
            ("EXPLAIN SELECT SLEEP(1)", k(Describe)),
            ("DO 1", k(Do).ro()),
            ("DO SLEEP(1)", k(Do)),
            // Writes.
            ("INSERT INTO t VALUES (1)", k(Insert)),
            ("INSERT INTO t SET a = INSERT('abc', 1, 1, 'x')", k(Insert)),
            ("UPDATE t SET a = 1", k(Update)),
            ("UPDATE t SET a = (@n := @n + 1)", k(Update).uv()),
            ("DELETE FROM t", k(Delete)),
            ("REPLACE INTO t VALUES (1)", k(Replace)),
            ("CALL p()", k(Call)),
            // SET.
            ("SET @a = 1", k(Set).uv()),
            ("SET @a := 1, @@session.sql_mode = ''", k(Set).uv().sv()),
            ("SET @`a b` = 1, @'c' = 2, @\"d\" = 3", k(Set).uv()),
            ("SET @a = 1, @b = 'x,y', @c = f(1, 2)", k(Set).uv()),
            ("SET @x = @@sql_mode", k(Set).uv()),
            (
                "SET @x = (SELECT GET_LOCK('a', 0))",
                k(Set).uv().pin(NamedLock),
            ),
            ("SET sql_mode := ''", k(Set).sv()),
            ("SET sql_mode = (@a := 'x')", k(Set).sv().uv()),
            ("SET autocommit = 0", k(Set).sv()),
            ("set `autocommit` = 1", k(Set).sv()),
            (
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                k(Set).sv(),
            ),
            ("SET TRANSACTION READ ONLY", k(Set).sv()),
            (
                "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                k(Set).gv(),
            ),
            ("SET GLOBAL max_connections=10", k(Set).gv()),
            ("SET @@global.max_connections = 10", k(Set).gv()),
            ("SET @@GLOBAL.hot_cache.key_buffer_size = 1", k(Set).gv()),
            ("SET GLOBAL a = 1, b = 2", k(Set).gv()),
            ("SET GLOBAL a = 1, SESSION b = 2", k(Set).gv().sv()),
            ("SET @@global.a = 1, b = 2", k(Set).gv().sv()),
            ("SET LOCAL sql_mode = ''", k(Set).sv()),
            ("SET @@local.x = 1", k(Set).sv()),
            ("SET @@x = 1", k(Set).sv()),
            ("SET NAMES utf8mb4 COLLATE utf8mb4_bin", k(Set).sv()),
            ("SET NAMES utf8, @a = 1", k(Set).sv().uv()),
            ("SET CHARACTER SET utf8", k(Set).sv()),
            ("SET CHARSET utf8", k(Set).sv()),
            ("SET ROLE admin", k(Set).sv()),
            ("SET ROLE NONE", k(Set).sv()),
            (
                "SET STATEMENT max_statement_time=1 FOR SELECT 1",
                k(Select).ro(),
            ),
            (
                "SET STATEMENT sql_mode='', x=2 FOR INSERT INTO t VALUES (1)",
                k(Insert),
            ),
            ("SET STATEMENT a = 1 FOR", k(Other)),
            ("SET PASSWORD = PASSWORD('x')", k(AccountManagement)),
            ("SET PASSWORD FOR 'u'@'%' = 'x'", k(AccountManagement)),
            ("SET DEFAULT ROLE r FOR u", k(AccountManagement)),
            ("SET x = 1 ; SET @y = 2", k(Set).sv()),
            // USE.
            ("USE `my-db`", k(Use).schema("my-db")),
            ("use test;", k(Use).schema("test")),
            ("USE `a``b`", k(Use).schema("a`b")),
            ("USE /* c */ Shop", k(Use).schema("Shop")),
            // Transactions.
            ("BEGIN", k(Begin)),
            ("begin work;", k(Begin)),
            ("START TRANSACTION", k(Begin)),
            ("START TRANSACTION READ ONLY", k(Begin)),
            ("start transaction with consistent snapshot", k(Begin)),
            ("BEGIN NOT ATOMIC SELECT 1; END", k(Other)),
            ("lbl: BEGIN END", k(Other)),
            ("START SLAVE", k(Other)),
            ("COMMIT", k(Commit)),
            ("COMMIT WORK AND NO CHAIN", k(Commit)),
            ("ROLLBACK", k(Rollback)),
            ("ROLLBACK WORK", k(Rollback)),
            ("ROLLBACK TO SAVEPOINT s", k(Savepoint)),
            ("ROLLBACK WORK TO s", k(Savepoint)),
            ("SAVEPOINT s", k(Savepoint)),
            ("RELEASE SAVEPOINT s", k(Savepoint)),
            ("XA START 'x'", k(XA).pin(Xa)),
            ("XA BEGIN 'x'", k(XA).pin(Xa)),
            ("XA END 'x'", k(XA)),
            ("XA PREPARE 'x'", k(XA)),
            ("XA COMMIT 'x'", k(XA).unpin(Xa)),
            ("xa rollback 'x'", k(XA).unpin(Xa)),
            // Prepared statements.
            ("PREPARE s1 FROM 'SELECT ?'", k(Prepare).name("s1")),
            ("PREPARE `My Stmt` FROM @sql", k(Prepare).name("My Stmt")),
            ("EXECUTE s1 USING @a", k(Execute).name("s1")),
            ("EXECUTE S1", k(Execute).name("S1")),
            ("EXECUTE IMMEDIATE 'SELECT 1'", k(Other)),
            ("DEALLOCATE PREPARE s1", k(Deallocate).name("s1")),
            ("DROP PREPARE s1", k(Deallocate).name("s1")),
            // Locks.
            ("LOCK TABLES t READ", k(LockTables).pin(TableLock)),
            (
                "LOCK TABLE t WRITE, u AS x READ",
                k(LockTables).pin(TableLock),
            ),
            ("UNLOCK TABLES", k(UnlockTables).unpin(TableLock)),
            (
                "FLUSH TABLES WITH READ LOCK",
                k(FlushTablesWithReadLock).pin(TableLock),
            ),
            (
                "FLUSH TABLES t1, t2 WITH READ LOCK",
                k(FlushTablesWithReadLock).pin(TableLock),
            ),
            (
                "FLUSH NO_WRITE_TO_BINLOG TABLES WITH READ LOCK",
                k(FlushTablesWithReadLock).pin(TableLock),
            ),
            ("FLUSH TABLES t FOR EXPORT", k(Other).pin(TableLock)),
            ("FLUSH TABLES", k(Other)),
            ("FLUSH PRIVILEGES", k(Other)),
            ("BACKUP LOCK t", k(Other).pin(TableLock)),
            ("BACKUP UNLOCK", k(Other).unpin(TableLock)),
            // LOAD.
            ("LOAD DATA LOCAL INFILE 'f' INTO TABLE t", k(LoadData)),
            (
                "LOAD DATA LOW_PRIORITY INFILE 'f' REPLACE INTO TABLE t",
                k(LoadData),
            ),
            ("LOAD XML LOCAL INFILE 'f' INTO TABLE t", k(LoadXml)),
            ("LOAD INDEX INTO CACHE t", k(Other)),
            // Accounts.
            (
                "CREATE USER 'u'@'%' IDENTIFIED BY 'p'",
                k(AccountManagement),
            ),
            ("CREATE OR REPLACE USER u", k(AccountManagement)),
            ("ALTER USER u ACCOUNT LOCK", k(AccountManagement)),
            ("DROP USER IF EXISTS u", k(AccountManagement)),
            ("RENAME USER a TO b", k(AccountManagement)),
            ("GRANT SELECT ON *.* TO u", k(AccountManagement)),
            ("REVOKE ALL ON *.* FROM u", k(AccountManagement)),
            ("CREATE ROLE r", k(AccountManagement)),
            ("DROP ROLE r", k(AccountManagement)),
            // DDL.
            ("CREATE TABLE t (a INT)", k(Ddl)),
            ("CREATE TEMPORARY TABLE t (a INT)", k(Ddl).pin(TempTable)),
            (
                "CREATE OR REPLACE TEMPORARY TABLE t AS SELECT 1",
                k(Ddl).pin(TempTable),
            ),
            ("DROP TEMPORARY TABLE IF EXISTS t", k(Ddl).unpin(TempTable)),
            ("DROP TABLE t", k(Ddl)),
            ("ALTER TABLE t ADD b INT", k(Ddl)),
            ("TRUNCATE TABLE t", k(Ddl)),
            ("RENAME TABLE a TO b", k(Ddl)),
            ("CREATE DATABASE x", k(Ddl)),
            ("CREATE DEFINER = u PROCEDURE p() SELECT 1", k(Ddl)),
            ("/*!40000 ALTER TABLE `t` DISABLE KEYS */", k(Ddl)),
            // HANDLER.
            ("HANDLER t OPEN", k(Kind::Handler).pin(Pin::Handler)),
            ("HANDLER db.t OPEN AS h", k(Kind::Handler).pin(Pin::Handler)),
            ("HANDLER h READ FIRST", k(Kind::Handler)),
            ("HANDLER h CLOSE", k(Kind::Handler).unpin(Pin::Handler)),
            (
                "HANDLER `x`.`y` CLOSE",
                k(Kind::Handler).unpin(Pin::Handler),
            ),
            // Others.
            ("KILL QUERY 5", k(Kill)),
            ("KILL 5", k(Kill)),
            ("ANALYZE TABLE t", k(Other)),
            ("HELP 'select'", k(Other)),
            ("(1)", k(Other)),
            ("'just a string'", k(Other)),
            // Comments and empty input.
            ("", k(Empty)),
            ("   \n\t", k(Empty)),
            ("/* only */ -- comment", k(Empty)),
            ("# comment", k(Empty)),
            (";", k(Empty)),
            ("/* unterminated", k(Empty)),
            ("/* x */ SELECT 1", k(Select).ro()),
            ("-- c\nSELECT 1", k(Select).ro()),
            ("--\tc\nSELECT 1", k(Select).ro()),
            ("# c\nSELECT 1", k(Select).ro()),
            ("/* a */ /* b */ -- c\n  # d\n SHOW DATABASES", k(Show).ro()),
            // Executable comments: their content is code.
            ("/*!40101 SET NAMES utf8 */", k(Set).sv()),
            (
                "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */",
                k(Set).uv().sv(),
            ),
            ("/*M!100100 SET @x = 1 */", k(Set).uv()),
            ("/*! SELECT 1 */", k(Select).ro()),
            ("/*!SELECT 1*/", k(Select).ro()),
            ("SELECT 1 /*!50100 FOR UPDATE */", k(Select)),
            ("SELECT 1 /*!1 + 1 */", k(Select).ro()),
            ("/*!999999\\- enable the sandbox mode */", k(Empty)),
            (
                "/*M!999999\\- enable the sandbox mode */ SELECT 1",
                k(Select).ro(),
            ),
            // Strings and quoted identifiers hide `;`, keywords and comment markers.
            ("SELECT 'a;b', \"c;d\", `e;f` FROM t", k(Select).ro()),
            ("SELECT 'it''s FOR UPDATE'", k(Select).ro()),
            ("SELECT 'a\\'; SELECT SLEEP(1)'", k(Select).ro()),
            (
                "SELECT '/*', '--', '#' FROM t WHERE b = 'x'",
                k(Select).ro(),
            ),
            ("SELECT `a``b` FROM `t;x`", k(Select).ro()),
        ]
    }

    #[test]
    fn unscoped_system_variable_assignments_are_named() {
        let names = |sql: &str| classify(sql.as_bytes()).untracked_vars;
        assert_eq!(names("SET @@wait_timeout = 1"), ["wait_timeout"]);
        assert_eq!(
            names("set @@SQL_MODE='ANSI', @@session.time_zone = '+00:00', @@Autocommit := 0"),
            ["sql_mode", "autocommit"]
        );
        assert_eq!(
            names("SET @x = @@wait_timeout, wait_timeout = 2"),
            Vec::<String>::new()
        );
        assert_eq!(names("SET @@`Wait_Timeout` = 1"), ["wait_timeout"]);
        assert_eq!(
            names("SET @@`a``b` = 1, @@`c"),
            Vec::<String>::new(),
            "doubled, unclosed"
        );
        for tracked in [
            "SET @@session.x = 1",
            "SET @@local.x = 1",
            "SET @@global.x = 1",
            "SET SESSION x = 1",
            "SET @@hot_cache.key_buffer_size = 1",
            "SELECT @@x",
        ] {
            assert_eq!(names(tracked), Vec::<String>::new(), "{tracked}");
        }
    }

    #[test]
    fn table_driven() {
        let cases = table();
        assert!(cases.len() >= 60);
        for (sql, exp) in &cases {
            check(sql.as_bytes(), exp);
        }
    }

    #[test]
    fn non_utf8() {
        check(b"SELECT '\xff\xfe;' FROM t", &k(Select).ro());
        check(b"SELECT \xe9t\xe9 FROM t WHERE x = '\x80'", &k(Select).ro());
        check(b"SELECT \xffsleep(1)", &k(Select).ro());
        check(b"SET @\xe9 = 1", &k(Set).uv());
        let st = classify(b"USE `\xffdb`");
        assert_eq!(st.schema.as_deref(), Some("\u{FFFD}db"));
        let st = classify(b"PREPARE s\xe9 FROM 'SELECT 1'");
        assert_eq!(st.prepared_name.as_deref(), Some("s\u{FFFD}"));
    }

    fn texts<'a>(sql: &'a str, statements: &[Statement]) -> Vec<&'a str> {
        statements.iter().map(|s| &sql[s.span.clone()]).collect()
    }

    #[test]
    fn spans() {
        let sql = "  /* c */ SELECT 1 ; ";
        assert_eq!(&sql[classify(sql.as_bytes()).span], "/* c */ SELECT 1");
        assert_eq!(classify(b"use test;").span, 0..8);
        assert_eq!(classify(b"").span, 0..0);

        let sql = "SELECT 1; SELECT 2";
        let all = classify_all(sql.as_bytes());
        assert_eq!(
            all.iter().map(|s| s.span.clone()).collect::<Vec<_>>(),
            [0..8, 10..18]
        );

        let sql = "SELECT 'a;b'; SET @x = 1;  ";
        let all = classify_all(sql.as_bytes());
        assert_eq!(texts(sql, &all), ["SELECT 'a;b'", "SET @x = 1"]);
        assert_eq!(all[1].kind, Set);
        assert!(all[1].sets_user_vars);

        let sql = "SELECT 1;;  ; /* c */ ; SELECT 2 -- tail\n; -- done";
        let all = classify_all(sql.as_bytes());
        assert_eq!(texts(sql, &all), ["SELECT 1", "SELECT 2 -- tail"]);

        assert!(classify_all(b"").is_empty());
        assert!(classify_all(b" ; -- nothing").is_empty());
        assert_eq!(classify_all(b"use test;").len(), 1);
    }

    #[test]
    fn multi_statement_kinds() {
        let sql = "BEGIN; INSERT INTO t VALUES ('x;y'); SELECT GET_LOCK('l', 1); \
                   CREATE TEMPORARY TABLE tmp (a INT); COMMIT";
        let all = classify_all(sql.as_bytes());
        let kinds: Vec<Kind> = all.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Begin, Insert, Select, Ddl, Commit]);
        assert_eq!(all[2].pin, Some(Pin::NamedLock));
        assert_eq!(all[3].pin, Some(Pin::TempTable));
        assert_eq!(&sql[all[1].span.clone()], "INSERT INTO t VALUES ('x;y')");
        // The first statement alone is what `classify` reports.
        assert_eq!(classify(sql.as_bytes()), all[0]);
    }

    #[test]
    fn long_and_nested_input() {
        // `SET STATEMENT` is unwound in a loop, not by recursion: no stack to exhaust.
        let mut sql = "SET STATEMENT a=1 FOR ".repeat(50_000);
        sql.push_str("SELECT 1");
        check(sql.as_bytes(), &k(Select).ro());
        let sql = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
        check(sql.as_bytes(), &k(Select).ro());
        let sql = format!("SELECT 1{}; SELECT SLEEP(1)", ")".repeat(1_000));
        assert_eq!(classify_all(sql.as_bytes()).len(), 2);
    }

    /// What mariadb-dump writes, start to end.
    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump 10.19-11.4.2-MariaDB, for debian-linux-gnu (x86_64)\n\
--\n\
-- Host: localhost    Database: shop\n\
-- ------------------------------------------------------\n\
-- Server version\t11.4.2-MariaDB\n\
\n\
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;\n\
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;\n\
/*!40101 SET NAMES utf8mb4 */;\n\
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n\
/*!40103 SET TIME_ZONE='+00:00' */;\n\
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n\
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n\
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n\
/*M!100616 SET @OLD_NOTE_VERBOSITY=@@NOTE_VERBOSITY, NOTE_VERBOSITY=0 */;\n\
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;\n\
\n\
--\n\
-- Table structure for table `t`\n\
--\n\
\n\
DROP TABLE IF EXISTS `t`;\n\
/*!40101 SET @saved_cs_client     = @@character_set_client */;\n\
/*!40101 SET character_set_client = utf8mb4 */;\n\
CREATE TABLE `t` (\n\
  `id` int(11) NOT NULL,\n\
  `note` varchar(20) DEFAULT 'a;b',\n\
  PRIMARY KEY (`id`)\n\
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_uca1400_ai_ci;\n\
/*!40101 SET character_set_client = @saved_cs_client */;\n\
\n\
LOCK TABLES `t` WRITE;\n\
/*!40000 ALTER TABLE `t` DISABLE KEYS */;\n\
INSERT INTO `t` VALUES\n\
(1,'x;y'),\n\
(2,'it\\'s');\n\
/*!40000 ALTER TABLE `t` ENABLE KEYS */;\n\
UNLOCK TABLES;\n\
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\
\n\
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n\
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;\n\
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n\
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;\n\
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;\n\
/*M!100616 SET NOTE_VERBOSITY=@OLD_NOTE_VERBOSITY */;\n\
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;\n\
\n\
-- Dump completed on 2024-06-01 12:00:00\n";

    #[test]
    fn mariadb_dump() {
        use Pin::*;
        let user = k(Set).uv();
        let session = k(Set).sv();
        let both = k(Set).uv().sv();
        let expected = [
            user.clone(),
            user.clone(),
            user.clone(),
            session.clone(),
            user.clone(),
            session.clone(),
            both.clone(),
            both.clone(),
            both.clone(),
            both.clone(),
            both,
            k(Ddl),
            user,
            session.clone(),
            k(Ddl),
            session.clone(),
            k(LockTables).pin(TableLock),
            k(Ddl),
            k(Insert),
            k(Ddl),
            k(UnlockTables).unpin(TableLock),
            session.clone(),
            session.clone(),
            session.clone(),
            session.clone(),
            session.clone(),
            session.clone(),
            session.clone(),
            session.clone(),
            session,
        ];
        let all = classify_all(DUMP.as_bytes());
        assert_eq!(all.len(), expected.len());
        for (st, exp) in all.iter().zip(&expected) {
            // Each span is a statement on its own, so classifying it alone gives the same.
            check(DUMP[st.span.clone()].as_bytes(), exp);
            assert_eq!(classify(DUMP[st.span.clone()].as_bytes()).kind, st.kind);
        }
        assert!(DUMP[all[0].span.clone()].starts_with("/*M!999999"));
        assert!(DUMP[all[18].span.clone()].ends_with("(2,'it\\'s')"));
    }

    /// Pieces that exercise every lexer state, for the structured property test.
    const PIECES: &[&str] = &[
        " ",
        "\n",
        ";",
        "'",
        "\"",
        "`",
        "\\",
        "/*",
        "*/",
        "/*!",
        "/*!40101",
        "/*M!100100",
        "-- ",
        "--",
        "#",
        "@",
        "@@",
        "@@global.",
        ":=",
        "=",
        ",",
        "(",
        ")",
        ".",
        "SELECT",
        "SET",
        "GLOBAL",
        "SESSION",
        "STATEMENT",
        "FOR",
        "UPDATE",
        "INTO",
        "LOCK",
        "IN",
        "TABLES",
        "GET_LOCK",
        "LAST_INSERT_ID",
        "INSERT",
        "NEXT",
        "VALUE",
        "HANDLER",
        "OPEN",
        "USE",
        "PREPARE",
        "x",
        "1",
        "\u{e9}",
        "BEGIN",
        "WITH",
        "READ",
        "FLUSH",
        "CREATE",
        "TEMPORARY",
    ];

    #[test]
    fn named_lock_names() {
        let names = |sql: &str| named_lock_calls(sql.as_bytes()).taken;
        let some = |n: &str| Some(n.to_owned());
        assert_eq!(
            names("SELECT GET_LOCK('a', 1), get_lock ( 'b' ,0)"),
            [some("a"), some("b")]
        );
        // Names only the server can read: the server's escapes, an expression, a variable, a
        // parameter, a double-quoted string (an identifier under ANSI_QUOTES).
        for sql in [
            r"DO GET_LOCK('a\'b', 1)",
            "DO GET_LOCK('a''b', 1)",
            "DO GET_LOCK(CONCAT('a', 'b'), 1)",
            "DO GET_LOCK('a' 'b', 1)",
            "DO GET_LOCK(@n, 1)",
            "DO GET_LOCK(?, ?)",
            r#"DO GET_LOCK("a", 1)"#,
            "DO GET_LOCK(_utf8mb4'a', 1)",
            "DO GET_LOCK('\u{e9}t\u{e9}', 1)",
        ] {
            assert_eq!(names(sql), [None], "{sql}");
        }
        // Not calls of the server's function.
        assert!(
            names("SELECT 'GET_LOCK(''a'', 1)', db.GET_LOCK('a', 1) /* GET_LOCK('b', 1) */")
                .is_empty()
        );
        assert_eq!(names("SELECT /*!GET_LOCK('a', 1)*/"), [some("a")]);
        let release = named_lock_calls(b"SELECT RELEASE_LOCK('a'), RELEASE_ALL_LOCKS()");
        assert!(release.taken.is_empty() && release.release_all);
        assert!(!named_lock_calls(b"SELECT RELEASE_LOCK('a')").release_all);
    }

    fn check_invariants(sql: &[u8]) {
        let first = classify(sql);
        assert!(first.span.start <= first.span.end && first.span.end <= sql.len());
        let all = classify_all(sql);
        let mut last_end = 0;
        for st in &all {
            assert_ne!(st.kind, Empty);
            assert!(st.span.start <= st.span.end && st.span.end <= sql.len());
            assert!(last_end <= st.span.start, "overlap: {all:?}");
            last_end = st.span.end;
        }
        if first.kind != Empty {
            assert_eq!(all.first(), Some(&first));
        }
        named_lock_calls(sql);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(sql in proptest::collection::vec(any::<u8>(), 0..300)) {
            check_invariants(&sql);
        }

        #[test]
        fn sql_like_input_never_panics(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..60)
        ) {
            check_invariants(pieces.concat().as_bytes());
        }
    }

    #[test]
    fn set_role_is_told_from_other_sets() {
        let role = |sql: &str| classify(sql.as_bytes()).sets_role;
        assert!(role("SET ROLE admin"));
        assert!(role("set /* who */ role NONE"));
        assert!(role("SET ROLE `a b`"));
        assert!(!role("SET DEFAULT ROLE admin"));
        assert!(!role("SET @role = 'admin'"));
        assert!(!role("SET role_x = 1"));
        assert!(!role("SET STATEMENT max_statement_time = 1 FOR SELECT 1"));
        let all = classify_all(b"SELECT 1; SET ROLE r; DO 1");
        assert_eq!(
            all.iter().map(|s| s.sets_role).collect::<Vec<_>>(),
            [false, true, false]
        );
    }
}
