//! Unit tests for the Dockerfile front end.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// Parses, panicking with the error on failure.
fn ok(text: &str) -> Dockerfile {
    match parse(text) {
        Ok(df) => df,
        Err(e) => panic!("parse failed: {e}\n---\n{text}"),
    }
}

/// Parses, expecting failure; returns the displayed error.
fn fail(text: &str) -> String {
    match parse(text) {
        Ok(df) => panic!("parse unexpectedly succeeded: {df:?}\n---\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The instructions of the single (first) stage.
fn instrs(text: &str) -> Vec<Instruction> {
    ok(text).stages.remove(0).instructions
}

/// The kind of the one instruction after `FROM scratch`.
fn only(line: &str) -> InstructionKind {
    let mut all = instrs(&format!("FROM scratch\n{line}\n"));
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0).kind
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| s(x)).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (s(k), s(v))).collect()
}

mod lines {
    use super::*;

    #[test]
    fn minimal_dockerfile() {
        let df = ok("FROM alpine:3.20\nRUN echo hi\n");
        assert_eq!(df.escape, '\\');
        assert!(df.meta_args.is_empty());
        assert_eq!(df.stages.len(), 1);
        let stage = &df.stages[0];
        assert_eq!(stage.base, "alpine:3.20");
        assert_eq!(stage.name, None);
        assert_eq!(stage.platform, None);
        assert_eq!(stage.line, 1);
        assert_eq!(stage.original, "FROM alpine:3.20");
        assert_eq!(stage.instructions.len(), 1);
        let run = &stage.instructions[0];
        assert_eq!(run.line, 2);
        assert_eq!(run.original, "RUN echo hi");
        assert_eq!(run.kind, InstructionKind::Run(Command::Shell(s("echo hi"))));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let df = ok("from alpine\nrUn echo hi\nCmd [\"sh\"]\n");
        let i = &df.stages[0].instructions;
        assert_eq!(i[0].kind.keyword(), "RUN");
        assert_eq!(i[0].original, "rUn echo hi");
        assert_eq!(
            i[1].kind,
            InstructionKind::Cmd(Command::Exec(strings(&["sh"])))
        );
    }

    #[test]
    fn comments_blank_lines_and_indentation() {
        let text = "# leading comment\n\n   FROM busybox\n\t# indented comment\n\n  RUN true   \n";
        let df = ok(text);
        assert_eq!(df.stages[0].line, 3);
        let run = &df.stages[0].instructions[0];
        assert_eq!(run.line, 6);
        assert_eq!(run.original, "RUN true");
    }

    #[test]
    fn continuation_with_backslash() {
        let i = instrs("FROM x\nRUN apt-get update \\\n    && apt-get install -y curl\nUSER me\n");
        assert_eq!(i[0].line, 2);
        assert_eq!(
            i[0].original,
            "RUN apt-get update     && apt-get install -y curl"
        );
        assert_eq!(
            i[0].kind,
            InstructionKind::Run(Command::Shell(s(
                "apt-get update     && apt-get install -y curl"
            )))
        );
        assert_eq!(i[1].line, 4);
    }

    #[test]
    fn continuation_allows_trailing_whitespace_after_escape() {
        let i = instrs("FROM x\nRUN a \\  \t\n b\n");
        assert_eq!(i[0].original, "RUN a  b");
    }

    #[test]
    fn comments_and_blank_lines_inside_continuation_are_dropped() {
        let text =
            "FROM x\nRUN one \\\n# a comment\n   # indented comment\n\n   \\\n two\nEXPOSE 80\n";
        let i = instrs(text);
        assert_eq!(i.len(), 2);
        // "one " + "   " (the line holding only an escape) + " two"
        assert_eq!(i[0].original, "RUN one     two");
        assert_eq!(i[1].line, 8);
    }

    #[test]
    fn continuation_at_end_of_file() {
        let i = instrs("FROM x\nRUN echo \\");
        assert_eq!(i[0].kind, InstructionKind::Run(Command::Shell(s("echo"))));
    }

    #[test]
    fn crlf_and_bom() {
        let df = ok("\u{feff}FROM x\r\nRUN a \\\r\n  b\r\n");
        assert_eq!(df.stages[0].instructions[0].original, "RUN a   b");
    }

    #[test]
    fn backtick_escape_directive() {
        let text = "# escape=`\nFROM windows\nRUN dir `\n  c:\\foo\\\nCOPY a\\b c:\\dest\\\n";
        let df = ok(text);
        assert_eq!(df.escape, '`');
        let i = &df.stages[0].instructions;
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].original, "RUN dir   c:\\foo\\");
        assert_eq!(i[0].line, 3);
        match &i[1].kind {
            InstructionKind::Copy(c) => {
                assert_eq!(c.sources, strings(&["a\\b"]));
                assert_eq!(c.dest, "c:\\dest\\");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn directive_forms() {
        assert_eq!(ok("#escape=`\nFROM x\n").escape, '`');
        assert_eq!(ok("# ESCAPE = ` \nFROM x\n").escape, '`');
        assert_eq!(ok("# escape=\\\nFROM x\n").escape, '\\');
        // syntax is accepted (and ignored) next to escape, in any order.
        assert_eq!(
            ok("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n").escape,
            '`'
        );
    }

    #[test]
    fn directive_after_comment_or_blank_line_is_a_comment() {
        assert_eq!(ok("# hello\n# escape=`\nFROM x\n").escape, '\\');
        assert_eq!(ok("\n# escape=`\nFROM x\n").escape, '\\');
        assert_eq!(ok("FROM x\n# escape=`\n").escape, '\\');
        // An unknown directive ends directive parsing.
        assert_eq!(ok("# foo=bar\n# escape=`\nFROM x\n").escape, '\\');
    }

    #[test]
    fn invalid_escape_directive() {
        assert_eq!(
            fail("# escape=x\nFROM x\n"),
            "dockerfile parse error line 1: invalid escape token 'x' does not match ` or \\"
        );
    }

    #[test]
    fn repeated_directive() {
        assert_eq!(
            fail("# escape=`\n# escape=\\\nFROM x\n"),
            "dockerfile parse error line 2: only one escape parser directive can be used"
        );
    }

    #[test]
    fn heredoc_is_plain_text() {
        let i = instrs("FROM x\nRUN cat <<EOF\n");
        assert_eq!(
            i[0].kind,
            InstructionKind::Run(Command::Shell(s("cat <<EOF")))
        );
        assert_eq!(
            fail("FROM x\nRUN <<EOF\necho hi\nEOF\n"),
            "dockerfile parse error line 3: unknown instruction: ECHO"
        );
    }
}

mod errors {
    use super::*;

    #[test]
    fn empty_file() {
        assert_eq!(fail(""), "file with no instructions");
        assert_eq!(
            fail("# just a comment\n\n   \n"),
            "file with no instructions"
        );
        let err = parse("").err();
        assert_eq!(err.and_then(|e| e.line), None);
    }

    #[test]
    fn unknown_instruction_with_line() {
        let err = parse("FROM x\n\nFOO bar\n").err();
        assert_eq!(
            err,
            Some(ParseError {
                line: Some(3),
                message: s("unknown instruction: FOO")
            })
        );
        assert_eq!(
            fail("FROM x\nfoo bar\n"),
            "dockerfile parse error line 2: unknown instruction: FOO"
        );
    }

    #[test]
    fn instruction_before_from() {
        assert_eq!(
            fail("ENV a=b\nFROM x\n"),
            "no build stage in current context"
        );
        assert_eq!(fail("ARG a\n"), "no build stage in current context");
    }

    #[test]
    fn missing_arguments() {
        for (line, msg) in [
            ("RUN", "RUN requires at least one argument"),
            ("CMD", "CMD requires at least one argument"),
            ("ENTRYPOINT", "ENTRYPOINT requires at least one argument"),
            ("ENV", "ENV requires at least one argument"),
            ("LABEL", "LABEL requires at least one argument"),
            ("ARG", "ARG requires at least one argument"),
            ("EXPOSE", "EXPOSE requires at least one argument"),
            ("VOLUME", "VOLUME requires at least one argument"),
            ("ONBUILD", "ONBUILD requires at least one argument"),
            ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
            ("SHELL", "SHELL requires at least one argument"),
            ("WORKDIR", "WORKDIR requires exactly one argument"),
            ("USER", "USER requires exactly one argument"),
            ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
            ("MAINTAINER", "MAINTAINER requires exactly one argument"),
        ] {
            assert_eq!(
                fail(&format!("FROM x\n{line}\n")),
                format!("dockerfile parse error line 2: {msg}"),
                "{line}"
            );
        }
    }

    #[test]
    fn error_line_is_where_the_instruction_starts() {
        assert_eq!(
            fail("FROM x\nRUN ok\nCOPY \\\n  onlyone\n"),
            "dockerfile parse error line 3: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
    }

    #[test]
    fn json_array_of_non_strings() {
        assert_eq!(
            fail("FROM x\nCMD [\"a\", 1]\n"),
            "dockerfile parse error line 2: when using JSON array syntax, arrays must be comprised of strings only"
        );
    }

    #[test]
    fn parse_error_display_without_line() {
        let e = ParseError::general("boom");
        assert_eq!(e.to_string(), "boom");
        assert_eq!(
            ParseError::at(7, "boom").to_string(),
            "dockerfile parse error line 7: boom"
        );
    }
}

mod from {
    use super::*;

    #[test]
    fn named_stages_and_platform() {
        let df = ok("FROM --platform=linux/arm64 golang:1.22 AS Build\nRUN go build\nfrom alpine as final\nCOPY --from=build /out /bin/\n");
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        assert_eq!(df.stages[0].platform.as_deref(), Some("linux/arm64"));
        assert_eq!(df.stages[0].base, "golang:1.22");
        assert_eq!(df.stages[1].name.as_deref(), Some("final"));
        assert_eq!(df.stages[1].line, 3);
        assert_eq!(df.stage_index("BUILD"), Some(0));
        assert_eq!(df.stage_index("final"), Some(1));
        assert_eq!(df.stage_index("nope"), None);
        match &df.stages[1].instructions[0].kind {
            InstructionKind::Copy(c) => assert_eq!(c.from.as_deref(), Some("build")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base_is_unexpanded() {
        let df = ok("ARG TAG=3.20\nARG REPO\nFROM ${REPO:-alpine}:$TAG\n");
        assert_eq!(df.stages[0].base, "${REPO:-alpine}:$TAG");
        assert_eq!(
            df.meta_args,
            vec![
                ArgDecl {
                    name: s("TAG"),
                    default: Some(s("3.20"))
                },
                ArgDecl {
                    name: s("REPO"),
                    default: None
                }
            ]
        );
    }

    #[test]
    fn wrong_argument_counts() {
        for text in [
            "FROM\n",
            "FROM a b\n",
            "FROM a AS\n",
            "FROM a FOR b\n",
            "FROM a AS b c\n",
        ] {
            assert_eq!(
                fail(text),
                "dockerfile parse error line 1: FROM requires either one or three arguments",
                "{text}"
            );
        }
    }

    #[test]
    fn invalid_stage_names() {
        assert_eq!(
            fail("FROM a AS 1st\n"),
            "dockerfile parse error line 1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
        );
        assert!(fail("FROM a AS b$c\n").contains("invalid name for build stage"));
        ok("FROM a AS b-c_d.e9\n");
    }

    #[test]
    fn duplicate_stage_names_case_insensitive() {
        assert_eq!(
            fail("FROM a AS one\nFROM b AS ONE\n"),
            "dockerfile parse error line 2: duplicate stage name \"one\""
        );
    }

    #[test]
    fn unknown_from_flag() {
        assert_eq!(
            fail("FROM --plat=x a\n"),
            "dockerfile parse error line 1: Unknown flag: plat"
        );
    }

    #[test]
    fn args_between_stages_belong_to_the_stage() {
        let df = ok("ARG A\nFROM x\nARG A\nFROM y\n");
        assert_eq!(df.meta_args.len(), 1);
        assert_eq!(df.stages[0].instructions.len(), 1);
        assert!(df.stages[1].instructions.is_empty());
    }
}

mod commands {
    use super::*;

    #[test]
    fn run_cmd_entrypoint_forms() {
        assert_eq!(
            only("RUN [\"echo\", \"a b\"]"),
            InstructionKind::Run(Command::Exec(strings(&["echo", "a b"])))
        );
        assert_eq!(
            only("CMD echo $HOME \"quoted\""),
            InstructionKind::Cmd(Command::Shell(s("echo $HOME \"quoted\"")))
        );
        assert_eq!(
            only("ENTRYPOINT [\"/bin/app\", \"--flag\"]"),
            InstructionKind::Entrypoint(Command::Exec(strings(&["/bin/app", "--flag"])))
        );
        assert_eq!(
            only("ENTRYPOINT []"),
            InstructionKind::Entrypoint(Command::Exec(vec![]))
        );
    }

    #[test]
    fn invalid_json_falls_back_to_shell_form() {
        assert_eq!(
            only("CMD [\"unterminated\""),
            InstructionKind::Cmd(Command::Shell(s("[\"unterminated\"")))
        );
        assert_eq!(
            only("RUN [ -f /etc/passwd ] && echo yes"),
            InstructionKind::Run(Command::Shell(s("[ -f /etc/passwd ] && echo yes")))
        );
        assert_eq!(
            only("CMD ['single', 'quotes']"),
            InstructionKind::Cmd(Command::Shell(s("['single', 'quotes']")))
        );
    }

    #[test]
    fn json_escapes_are_json_not_dockerfile() {
        assert_eq!(
            only(r#"CMD ["c:\\path", "a\"b"]"#),
            InstructionKind::Cmd(Command::Exec(strings(&["c:\\path", "a\"b"])))
        );
    }

    #[test]
    fn run_buildkit_flags_are_rejected() {
        let err = fail("FROM x\nRUN --mount=type=cache,target=/root/.cache pip install\n");
        assert!(
            err.starts_with("dockerfile parse error line 2: the --mount option requires BuildKit"),
            "{err}"
        );
        assert!(fail("FROM x\nRUN --network=none true\n")
            .contains("--network option requires BuildKit"));
        assert_eq!(
            fail("FROM x\nRUN --bogus true\n"),
            "dockerfile parse error line 2: Unknown flag: bogus"
        );
    }

    #[test]
    fn cmd_with_leading_double_dash_word_is_a_flag() {
        assert_eq!(
            fail("FROM x\nCMD --help\n"),
            "dockerfile parse error line 2: Unknown flag: help"
        );
        // `--` ends the flags.
        assert_eq!(
            only("CMD -- --help"),
            InstructionKind::Cmd(Command::Shell(s("--help")))
        );
    }

    #[test]
    fn workdir_user_stopsignal_maintainer_take_the_rest() {
        assert_eq!(
            only("WORKDIR /app dir"),
            InstructionKind::Workdir(s("/app dir"))
        );
        assert_eq!(
            only("USER ${UID}:1000"),
            InstructionKind::User(s("${UID}:1000"))
        );
        assert_eq!(
            only("STOPSIGNAL SIGTERM"),
            InstructionKind::StopSignal(s("SIGTERM"))
        );
        assert_eq!(
            only("MAINTAINER Jane Doe <jane@example.com>"),
            InstructionKind::Maintainer(s("Jane Doe <jane@example.com>"))
        );
    }

    #[test]
    fn expose_and_volume() {
        assert_eq!(
            only("EXPOSE 80/tcp\t443 ${PORT}"),
            InstructionKind::Expose(strings(&["80/tcp", "443", "${PORT}"]))
        );
        assert_eq!(
            only("VOLUME /data /logs"),
            InstructionKind::Volume(strings(&["/data", "/logs"]))
        );
        assert_eq!(
            only("VOLUME [\"/data\", \"/var/my logs\"]"),
            InstructionKind::Volume(strings(&["/data", "/var/my logs"]))
        );
        assert_eq!(
            fail("FROM x\nVOLUME [\"/a\", \" \"]\n"),
            "dockerfile parse error line 2: VOLUME specified can not be an empty string"
        );
    }

    #[test]
    fn shell_json_only() {
        assert_eq!(
            only("SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]"),
            InstructionKind::Shell(strings(&["/bin/bash", "-o", "pipefail", "-c"]))
        );
        assert_eq!(
            fail("FROM x\nSHELL /bin/bash -c\n"),
            "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            fail("FROM x\nSHELL []\n"),
            "dockerfile parse error line 2: SHELL requires at least one argument"
        );
    }

    #[test]
    fn instruction_flags_on_flagless_instructions() {
        assert_eq!(
            fail("FROM x\nENV --foo=bar a=b\n"),
            "dockerfile parse error line 2: Unknown flag: foo"
        );
    }
}

mod copy {
    use super::*;

    fn copy_args(line: &str) -> CopyArgs {
        match only(line) {
            InstructionKind::Copy(c) | InstructionKind::Add(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sources_and_dest() {
        let c = copy_args("COPY a.txt b/ *.go /dst/");
        assert_eq!(c.sources, strings(&["a.txt", "b/", "*.go"]));
        assert_eq!(c.dest, "/dst/");
        assert_eq!(
            (c.from, c.chown, c.chmod, c.link),
            (None, None, None, false)
        );
    }

    #[test]
    fn json_form() {
        let c = copy_args("COPY [\"my file.txt\", \"other\", \"/dest dir/\"]");
        assert_eq!(c.sources, strings(&["my file.txt", "other"]));
        assert_eq!(c.dest, "/dest dir/");
    }

    #[test]
    fn flags() {
        let c = copy_args("COPY --from=builder --chown=app:app --chmod=0755 --link /out /bin/");
        assert_eq!(c.from.as_deref(), Some("builder"));
        assert_eq!(c.chown.as_deref(), Some("app:app"));
        assert_eq!(c.chmod.as_deref(), Some("0755"));
        assert!(c.link);
        let c = copy_args("COPY --link=false --chown=\"a b\" x y");
        assert!(!c.link);
        assert_eq!(c.chown.as_deref(), Some("a b"));
        let c = copy_args("ADD --chown=1:1 https://example.com/a.tgz /x");
        assert_eq!(c.chown.as_deref(), Some("1:1"));
        assert_eq!(c.sources, strings(&["https://example.com/a.tgz"]));
    }

    #[test]
    fn flag_errors() {
        assert_eq!(
            fail("FROM x\nCOPY --foo=1 a b\n"),
            "dockerfile parse error line 2: Unknown flag: foo"
        );
        assert_eq!(
            fail("FROM x\nADD --from=x a b\n"),
            "dockerfile parse error line 2: Unknown flag: from"
        );
        assert_eq!(
            fail("FROM x\nCOPY --from a b\n"),
            "dockerfile parse error line 2: Missing a value on flag: from"
        );
        assert_eq!(
            fail("FROM x\nCOPY --chown=a --chown=b a b\n"),
            "dockerfile parse error line 2: Duplicate flag specified: chown"
        );
        assert_eq!(
            fail("FROM x\nCOPY --link=maybe a b\n"),
            "dockerfile parse error line 2: Expecting boolean value for flag link, not: maybe"
        );
        assert!(fail("FROM x\nADD --checksum=sha256:abc https://x/y /y\n")
            .contains("the --checksum option requires BuildKit"));
    }

    #[test]
    fn needs_two_arguments() {
        assert_eq!(
            fail("FROM x\nADD onlyone\n"),
            "dockerfile parse error line 2: ADD requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert!(fail("FROM x\nCOPY [\"a\"]\n").contains("COPY requires at least two arguments"));
    }
}

mod env_label_arg {
    use super::*;

    #[test]
    fn env_pairs_keep_quotes_and_escapes() {
        assert_eq!(
            only(r#"ENV A=1 B="two words" C='single' D=with\ space E="x\"y""#),
            InstructionKind::Env(pairs(&[
                ("A", "1"),
                ("B", "\"two words\""),
                ("C", "'single'"),
                ("D", "with\\ space"),
                ("E", "\"x\\\"y\""),
            ]))
        );
    }

    #[test]
    fn env_legacy_form() {
        assert_eq!(
            only("ENV PATH /usr/local/bin:$PATH and more"),
            InstructionKind::Env(pairs(&[("PATH", "/usr/local/bin:$PATH and more")]))
        );
        assert_eq!(
            only("ENV GREETING \"hello world\""),
            InstructionKind::Env(pairs(&[("GREETING", "\"hello world\"")]))
        );
    }

    #[test]
    fn env_empty_value_and_continuation() {
        assert_eq!(
            only("ENV A= B=\"\""),
            InstructionKind::Env(pairs(&[("A", ""), ("B", "\"\"")]))
        );
        let i = instrs("FROM x\nENV A=1 \\\n    B=2\n");
        assert_eq!(
            i[0].kind,
            InstructionKind::Env(pairs(&[("A", "1"), ("B", "2")]))
        );
    }

    #[test]
    fn env_errors() {
        assert_eq!(
            fail("FROM x\nENV A=1 B\n"),
            "dockerfile parse error line 2: Syntax error - can't find = in \"B\". Must be of the form: name=value"
        );
        assert_eq!(
            fail("FROM x\nENV =1\n"),
            "dockerfile parse error line 2: ENV names can not be blank"
        );
        assert_eq!(
            fail("FROM x\nENV ONLYKEY\n"),
            "dockerfile parse error line 2: ENV must have two arguments"
        );
    }

    #[test]
    fn label_forms() {
        assert_eq!(
            only(r#"LABEL "com.example.vendor"="ACME Inc" version=1.0 description="multi word""#),
            InstructionKind::Label(pairs(&[
                ("\"com.example.vendor\"", "\"ACME Inc\""),
                ("version", "1.0"),
                ("description", "\"multi word\""),
            ]))
        );
        assert_eq!(
            fail("FROM x\nLABEL =x\n"),
            "dockerfile parse error line 2: LABEL names can not be blank"
        );
    }

    #[test]
    fn arg_forms() {
        assert_eq!(
            only("ARG a=1 b c=\"x y\" d="),
            InstructionKind::Arg(vec![
                ArgDecl {
                    name: s("a"),
                    default: Some(s("1"))
                },
                ArgDecl {
                    name: s("b"),
                    default: None
                },
                ArgDecl {
                    name: s("c"),
                    default: Some(s("\"x y\""))
                },
                ArgDecl {
                    name: s("d"),
                    default: Some(s(""))
                },
            ])
        );
        assert_eq!(
            fail("FROM x\nARG =v\n"),
            "dockerfile parse error line 2: ARG names can not be blank"
        );
    }

    #[test]
    fn env_with_backtick_escape() {
        let df = ok("# escape=`\nFROM x\nENV P=c:\\dir A=b` c\n");
        assert_eq!(
            df.stages[0].instructions[0].kind,
            InstructionKind::Env(pairs(&[("P", "c:\\dir"), ("A", "b` c")]))
        );
        let env = |_: &str| None;
        assert_eq!(expand_word("b` c", df.escape, &env).ok(), Some(s("b c")));
        assert_eq!(
            expand_word("c:\\dir", df.escape, &env).ok(),
            Some(s("c:\\dir"))
        );
    }
}

mod healthcheck {
    use super::*;

    #[test]
    fn none() {
        assert_eq!(
            only("HEALTHCHECK NONE"),
            InstructionKind::Healthcheck(Healthcheck::None)
        );
        assert_eq!(
            only("healthcheck none"),
            InstructionKind::Healthcheck(Healthcheck::None)
        );
        assert_eq!(
            fail("FROM x\nHEALTHCHECK NONE extra\n"),
            "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments"
        );
    }

    #[test]
    fn cmd_with_options() {
        let kind = only(
            "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --start-interval=2s --retries=3 CMD curl -f http://localhost/ || exit 1",
        );
        assert_eq!(
            kind,
            InstructionKind::Healthcheck(Healthcheck::Cmd {
                test: Command::Shell(s("curl -f http://localhost/ || exit 1")),
                interval: Some(Duration::from_secs(30)),
                timeout: Some(Duration::from_secs(90)),
                start_period: Some(Duration::from_millis(500)),
                start_interval: Some(Duration::from_secs(2)),
                retries: Some(3),
            })
        );
    }

    #[test]
    fn cmd_exec_form_without_options() {
        assert_eq!(
            only("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]"),
            InstructionKind::Healthcheck(Healthcheck::Cmd {
                test: Command::Exec(strings(&["/bin/check", "-q"])),
                interval: None,
                timeout: None,
                start_period: None,
                start_interval: None,
                retries: None,
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            fail("FROM x\nHEALTHCHECK CMD\n"),
            "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"
        );
        assert_eq!(
            fail("FROM x\nHEALTHCHECK RUN true\n"),
            "dockerfile parse error line 2: Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            fail("FROM x\nHEALTHCHECK --interval=10 CMD true\n"),
            "dockerfile parse error line 2: time: missing unit in duration \"10\""
        );
        assert_eq!(
            fail("FROM x\nHEALTHCHECK --interval=100us CMD true\n"),
            "dockerfile parse error line 2: Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            fail("FROM x\nHEALTHCHECK --retries=-1 CMD true\n"),
            "dockerfile parse error line 2: --retries cannot be negative (-1)"
        );
        assert!(fail("FROM x\nHEALTHCHECK --retries=x CMD true\n").contains("invalid syntax"));
        assert_eq!(
            fail("FROM x\nHEALTHCHECK --foo=1 CMD true\n"),
            "dockerfile parse error line 2: Unknown flag: foo"
        );
    }

    #[test]
    fn zero_interval_means_default() {
        match only("HEALTHCHECK --interval=0s --timeout=0 CMD true") {
            InstructionKind::Healthcheck(Healthcheck::Cmd {
                interval, timeout, ..
            }) => assert_eq!((interval, timeout), (None, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn go_durations() {
        use super::super::parser::parse_go_duration as d;
        assert_eq!(d("0"), Ok(0));
        assert_eq!(d("1ns"), Ok(1));
        assert_eq!(d("1.5s"), Ok(1_500_000_000));
        assert_eq!(d("1h2m3s"), Ok(3_723_000_000_000));
        assert_eq!(d(".5ms"), Ok(500_000));
        assert_eq!(d("2us"), Ok(2_000));
        assert_eq!(d("3µs"), Ok(3_000));
        assert_eq!(d("-1m"), Ok(-60_000_000_000));
        assert_eq!(d("+1m"), Ok(60_000_000_000));
        assert_eq!(d(""), Err(s("time: invalid duration \"\"")));
        assert_eq!(
            d("1d"),
            Err(s("time: unknown unit \"d\" in duration \"1d\""))
        );
        assert_eq!(d("s"), Err(s("time: invalid duration \"s\"")));
        assert_eq!(d("1"), Err(s("time: missing unit in duration \"1\"")));
        assert!(d("9999999999h").is_err());
    }
}

mod onbuild {
    use super::*;

    #[test]
    fn nested_instruction() {
        let i = instrs("FROM x\nONBUILD RUN echo hi\nonbuild COPY --chown=1 . /app\n");
        match &i[0].kind {
            InstructionKind::Onbuild(inner) => {
                assert_eq!(inner.original, "RUN echo hi");
                assert_eq!(inner.line, 2);
                assert_eq!(
                    inner.kind,
                    InstructionKind::Run(Command::Shell(s("echo hi")))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(i[0].original, "ONBUILD RUN echo hi");
        match &i[1].kind {
            InstructionKind::Onbuild(inner) => {
                assert_eq!(inner.original, "COPY --chown=1 . /app");
                assert!(
                    matches!(&inner.kind, InstructionKind::Copy(c) if c.chown.as_deref() == Some("1"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forbidden_triggers() {
        assert_eq!(
            fail("FROM x\nONBUILD ONBUILD RUN x\n"),
            "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            fail("FROM x\nONBUILD from y\n"),
            "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            fail("FROM x\nONBUILD MAINTAINER me\n"),
            "dockerfile parse error line 2: MAINTAINER isn't allowed as an ONBUILD trigger"
        );
    }

    #[test]
    fn nested_errors_are_reported() {
        assert_eq!(
            fail("FROM x\nONBUILD BOGUS y\n"),
            "dockerfile parse error line 2: unknown instruction: BOGUS"
        );
        assert!(fail("FROM x\nONBUILD COPY a\n").contains("COPY requires at least two arguments"));
    }
}

mod expand {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter().map(|(k, v)| (s(k), s(v))).collect()
    }

    fn word(text: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        let map = env_of(vars);
        let env = |k: &str| map.get(k).cloned();
        expand_word(text, '\\', &env).map_err(|e| e.to_string())
    }

    fn words(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        let map = env_of(vars);
        let env = |k: &str| map.get(k).cloned();
        match expand_words(text, '\\', &env) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        }
    }

    fn w(text: &str, vars: &[(&str, &str)]) -> String {
        match word(text, vars) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn simple_variables() {
        let vars = [("A", "1"), ("B_2", "two"), ("EMPTY", "")];
        assert_eq!(w("$A", &vars), "1");
        assert_eq!(w("${A}x", &vars), "1x");
        assert_eq!(w("$Ax", &vars), "");
        assert_eq!(w("$B_2/$A", &vars), "two/1");
        assert_eq!(w("pre-${EMPTY}-$UNSET-post", &vars), "pre---post");
        assert_eq!(w("cost: $", &vars), "cost: $");
        assert_eq!(w("$/", &vars), "$/");
        assert_eq!(w("$1x", &vars), "x");
    }

    #[test]
    fn defaults_and_alternatives() {
        let vars = [("SET", "v"), ("EMPTY", "")];
        assert_eq!(w("${SET:-d}", &vars), "v");
        assert_eq!(w("${UNSET:-d}", &vars), "d");
        assert_eq!(w("${EMPTY:-d}", &vars), "d");
        assert_eq!(w("${EMPTY-d}", &vars), "");
        assert_eq!(w("${UNSET-d}", &vars), "d");
        assert_eq!(w("${SET:+alt}", &vars), "alt");
        assert_eq!(w("${EMPTY:+alt}", &vars), "");
        assert_eq!(w("${EMPTY+alt}", &vars), "alt");
        assert_eq!(w("${UNSET+alt}", &vars), "");
        assert_eq!(w("${UNSET:-two words}", &vars), "two words");
    }

    #[test]
    fn nested_default() {
        let vars = [("B", "bee")];
        assert_eq!(w("${A:-${B}}", &vars), "bee");
        assert_eq!(w("${A:-${C:-deep}}", &vars), "deep");
        assert_eq!(w("${A:-$B-x}", &vars), "bee-x");
        assert_eq!(w("${B:+[${B}]}", &vars), "[bee]");
    }

    #[test]
    fn required_variables() {
        let vars = [("SET", "v"), ("EMPTY", "")];
        assert_eq!(w("${SET:?must}", &vars), "v");
        assert_eq!(w("${EMPTY?must}", &vars), "");
        assert_eq!(
            word("${UNSET:?must be set}", &vars),
            Err(s(
                "failed to process \"${UNSET:?must be set}\": UNSET: must be set"
            ))
        );
        assert_eq!(
            word("${EMPTY:?}", &vars),
            Err(s(
                "failed to process \"${EMPTY:?}\": EMPTY: is not allowed to be empty"
            ))
        );
        assert_eq!(
            word("${UNSET?}", &vars),
            Err(s(
                "failed to process \"${UNSET?}\": UNSET: is not allowed to be unset"
            ))
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            word("${A", &[]),
            Err(s("failed to process \"${A\": syntax error: missing '}'"))
        );
        assert_eq!(
            word("${A:-x", &[]),
            Err(s("failed to process \"${A:-x\": syntax error: missing '}'"))
        );
        assert!(word("${", &[]).is_err_and(|e| e.ends_with("syntax error: missing '}'")));
        assert!(word("${}", &[]).is_err_and(|e| e.ends_with("syntax error: bad substitution")));
        assert!(word("${:-x}", &[]).is_err_and(|e| e.ends_with("bad substitution")));
        assert!(word("${A!x}", &[])
            .is_err_and(|e| e.ends_with("unsupported modifier (!) in substitution")));
        assert!(word("${A:=x}", &[])
            .is_err_and(|e| e.ends_with("unsupported modifier (:=) in substitution")));
        assert!(word("'open", &[]).is_err_and(|e| e.contains("matching single-quote")));
        assert!(word("\"open", &[]).is_err_and(|e| e.contains("matching double-quote")));
    }

    #[test]
    fn quotes() {
        let vars = [("A", "x y")];
        assert_eq!(w("'$A'", &vars), "$A");
        assert_eq!(w("\"$A\"", &vars), "x y");
        assert_eq!(w("\"it's\"", &vars), "it's");
        assert_eq!(w("'say \"hi\"'", &vars), "say \"hi\"");
        assert_eq!(w("a'b'\"c\"d", &vars), "abcd");
        assert_eq!(w("\"\"", &vars), "");
    }

    #[test]
    fn escapes() {
        let vars = [("A", "x")];
        assert_eq!(w("\\$A", &vars), "$A");
        assert_eq!(w("\\${A}", &vars), "${A}");
        assert_eq!(w("a\\ b", &vars), "a b");
        assert_eq!(w("\\\\", &vars), "\\");
        assert_eq!(w("trailing\\", &vars), "trailing");
        // Inside double quotes only ", $ and the escape itself are escaped.
        assert_eq!(w("\"\\$A \\\" \\\\ \\n\"", &vars), "$A \" \\ \\n");
        // Inside single quotes nothing is.
        assert_eq!(w("'\\$A'", &vars), "\\$A");
    }

    #[test]
    fn backtick_escape() {
        let env = |k: &str| (k == "A").then(|| s("x"));
        assert_eq!(expand_word("`$A", '`', &env).ok(), Some(s("$A")));
        assert_eq!(expand_word("c:\\$A", '`', &env).ok(), Some(s("c:\\x")));
        assert_eq!(expand_word("\"a`\"b\"", '`', &env).ok(), Some(s("a\"b")));
    }

    #[test]
    fn word_splitting() {
        let vars = [("A", "one two"), ("E", "")];
        assert_eq!(words("a b   c", &vars), strings(&["a", "b", "c"]));
        assert_eq!(words("$A three", &vars), strings(&["one", "two", "three"]));
        assert_eq!(words("\"$A\" three", &vars), strings(&["one two", "three"]));
        assert_eq!(words("'a b' c\\ d", &vars), strings(&["a b", "c d"]));
        assert_eq!(words("x$A", &vars), strings(&["xone", "two"]));
        assert_eq!(words("  $E  ", &vars), Vec::<String>::new());
        assert_eq!(words("\"\" a", &vars), strings(&["a"]));
        assert_eq!(
            words("8080/tcp ${P:-9090}/udp", &vars),
            strings(&["8080/tcp", "9090/udp"])
        );
    }

    #[test]
    fn expand_word_keeps_whitespace() {
        assert_eq!(w("a  b", &[]), "a  b");
        assert_eq!(w("${X:-a  b}", &[]), "a  b");
    }

    #[test]
    fn pattern_trimming() {
        let vars = [("F", "archive.tar.gz"), ("P", "/usr/local/bin")];
        assert_eq!(w("${F%.*}", &vars), "archive.tar");
        assert_eq!(w("${F%%.*}", &vars), "archive");
        assert_eq!(w("${F#*.}", &vars), "tar.gz");
        assert_eq!(w("${F##*.}", &vars), "gz");
        assert_eq!(w("${P#/usr}", &vars), "/local/bin");
        assert_eq!(w("${P%/nomatch}", &vars), "/usr/local/bin");
        assert_eq!(w("${UNSET#x}", &vars), "");
    }

    #[test]
    fn pattern_replacement() {
        let vars = [("V", "a-b-c")];
        assert_eq!(w("${V/-/_}", &vars), "a_b-c");
        assert_eq!(w("${V//-/_}", &vars), "a_b_c");
        assert_eq!(w("${V//?/x}", &vars), "xxxxx");
        assert_eq!(w("${V/b*/$}", &vars), "a-$");
        assert!(word("${V/x", &vars).is_err_and(|e| e.ends_with("missing '/' in ${}")));
    }

    #[test]
    fn expand_error_fields() {
        let env = |_: &str| None;
        let err = expand_word("${X:?nope}", '\\', &env).err();
        assert_eq!(
            err,
            Some(ExpandError {
                word: s("${X:?nope}"),
                message: s("X: nope")
            })
        );
    }

    #[test]
    fn parsed_env_values_expand_as_intended() {
        let i = instrs("FROM x\nENV A=\"a b\" B=${A:-z}\\ c C='$A'\n");
        let InstructionKind::Env(pairs) = &i[0].kind else {
            panic!("{:?}", i[0].kind);
        };
        let mut env: HashMap<String, String> = HashMap::new();
        for (k, v) in pairs {
            let lookup = |n: &str| env.get(n).cloned();
            let value = match expand_word(v, '\\', &lookup) {
                Ok(v) => v,
                Err(e) => panic!("{e}"),
            };
            env.insert(k.clone(), value);
        }
        assert_eq!(env["A"], "a b");
        assert_eq!(env["B"], "a b c");
        assert_eq!(env["C"], "$A");
    }
}

mod dockerignore {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        match IgnoreRules::parse(text) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn empty_and_comments() {
        let r = rules("# comment\n\n   \n");
        assert!(r.is_empty());
        assert!(!r.is_excluded("anything"));
        assert!(IgnoreRules::default().is_empty());
    }

    #[test]
    fn simple_names_and_directories() {
        let r = rules("node_modules\n*.log\n  tmp/  \n");
        assert!(r.is_excluded("node_modules"));
        assert!(r.is_excluded("node_modules/pkg/index.js"));
        assert!(r.is_excluded("debug.log"));
        assert!(!r.is_excluded("logs/debug.log"), "* does not cross /");
        assert!(r.is_excluded("tmp"));
        assert!(r.is_excluded("tmp/x/y"));
        assert!(!r.is_excluded("src/node_modules"), "patterns are rooted");
        assert!(!r.is_excluded("main.rs"));
    }

    #[test]
    fn exceptions_last_match_wins() {
        let r = rules("*.md\n!README.md\nREADME*.md\n!README-keep.md\n");
        assert!(r.is_excluded("CHANGES.md"));
        assert!(r.is_excluded("README.md"));
        assert!(!r.is_excluded("README-keep.md"));
        let r = rules("*\n!src\n");
        assert!(r.is_excluded("Cargo.toml"));
        assert!(!r.is_excluded("src"));
        assert!(!r.is_excluded("src/main.rs"));
    }

    #[test]
    fn double_star() {
        let r = rules("**/*.go\n");
        assert!(r.is_excluded("main.go"));
        assert!(r.is_excluded("a/b/c/main.go"));
        assert!(!r.is_excluded("main.rs"));
        let r = rules("a/**/z\n");
        assert!(r.is_excluded("a/z"));
        assert!(r.is_excluded("a/b/c/z"));
        assert!(r.is_excluded("a/b/z/file"));
        assert!(!r.is_excluded("b/a/z"));
        let r = rules("build/**\n");
        assert!(r.is_excluded("build/x"));
        let r = rules("**\n!keep\n");
        assert!(r.is_excluded("anything/deep"));
        assert!(!r.is_excluded("keep/file"));
        let r = rules("**/target\n");
        assert!(r.is_excluded("target"));
        assert!(r.is_excluded("crates/x/target/debug/app"));
    }

    #[test]
    fn question_mark_classes_and_escapes() {
        let r = rules("file?.txt\n[abc]x\n[^0-9]y\nlit\\*\n");
        assert!(r.is_excluded("file1.txt"));
        assert!(!r.is_excluded("file10.txt"));
        assert!(r.is_excluded("bx"));
        assert!(!r.is_excluded("dx"));
        assert!(r.is_excluded("ay"));
        assert!(!r.is_excluded("5y"));
        assert!(r.is_excluded("lit*"));
        assert!(!r.is_excluded("litx"));
        let r = rules("[a-c][0-9].bin\n");
        assert!(r.is_excluded("b7.bin"));
        assert!(!r.is_excluded("d7.bin"));
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        let r = rules("a.b\n(x)+\n^c$\n");
        assert!(r.is_excluded("a.b"));
        assert!(!r.is_excluded("axb"));
        assert!(r.is_excluded("(x)+"));
        assert!(r.is_excluded("^c$"));
    }

    #[test]
    fn leading_slash_dot_slash_and_cleaning() {
        let r = rules("/secret\n./cache\nfoo/../bar\n a//b/ \n");
        assert!(r.is_excluded("secret"));
        assert!(r.is_excluded("cache/x"));
        assert!(r.is_excluded("bar"));
        assert!(!r.is_excluded("foo"));
        assert!(r.is_excluded("a/b/c"));
        // Paths given to is_excluded are cleaned too.
        assert!(r.is_excluded("./secret"));
        assert!(r.is_excluded("/secret/key"));
        assert!(!r.is_excluded("."));
        assert!(!r.is_excluded(""));
    }

    #[test]
    fn reinclusion_below_an_excluded_directory() {
        let r = rules("docs\n!docs/keep.md\n");
        assert!(r.is_excluded("docs"));
        assert!(r.is_excluded("docs/other.md"));
        assert!(!r.is_excluded("docs/keep.md"));
        assert!(r.may_contain_included("docs"));
        assert!(!r.may_contain_included("other"));
        assert!(!r.may_contain_included("docs/sub"));
    }

    #[test]
    fn may_contain_included_with_wildcards() {
        let r = rules("vendor\n!vendor/*/LICENSE\n");
        assert!(r.may_contain_included("vendor"));
        assert!(r.may_contain_included("vendor/pkg"));
        assert!(!r.may_contain_included("vendor/pkg/sub"));
        assert!(r.is_excluded("vendor/pkg/main.go"));
        assert!(!r.is_excluded("vendor/pkg/LICENSE"));
        let r = rules("*\n!**/*.rs\n");
        assert!(r.may_contain_included("any/dir"));
        assert!(!r.is_excluded("any/dir/lib.rs"));
        let r = rules("build\n");
        assert!(!r.may_contain_included("build"), "no exceptions at all");
    }

    #[test]
    fn comment_only_at_line_start() {
        let r = rules("#ignored\n \\#literal\n");
        assert!(!r.is_excluded("ignored"));
        assert!(r.is_excluded("#literal"));
    }

    #[test]
    fn errors() {
        let err = IgnoreRules::parse("a\n!\n").err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(s(
                "error parsing .dockerignore line 2: illegal exclusion pattern: \"!\""
            ))
        );
        for bad in ["[abc", "[]", "a\\", "[z-]"] {
            let err = IgnoreRules::parse(bad).err();
            assert_eq!(
                err.map(|e| e.message),
                Some(s(
                    "error parsing .dockerignore line 1: syntax error in pattern"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn crlf_and_bom() {
        let r = rules("\u{feff}target\r\n!target/keep\r\n");
        assert!(r.is_excluded("target/x"));
        assert!(!r.is_excluded("target/keep"));
    }
}

#[test]
fn realistic_multistage_dockerfile() {
    let text = r#"# syntax=docker/dockerfile:1
ARG RUST_VERSION=1.85
ARG BASE=debian:bookworm-slim

FROM rust:${RUST_VERSION} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch
COPY . .
RUN cargo build --release \
    # build only the server
    --bin server

FROM ${BASE}
LABEL org.opencontainers.image.title="server" \
      org.opencontainers.image.version=1.0
ENV APP_HOME=/app PATH=/app/bin:$PATH
RUN useradd -r app
COPY --from=builder --chown=app:app /src/target/release/server /app/bin/server
USER app
EXPOSE 8080
HEALTHCHECK --interval=10s CMD ["/app/bin/server", "--check"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/app/bin/server"]
CMD ["--port", "8080"]
"#;
    let df = ok(text);
    assert_eq!(df.meta_args.len(), 2);
    assert_eq!(df.stages.len(), 2);
    let builder = &df.stages[0];
    assert_eq!(builder.name.as_deref(), Some("builder"));
    assert_eq!(builder.line, 5);
    assert_eq!(builder.instructions.len(), 5);
    assert_eq!(
        builder.instructions[4].original,
        "RUN cargo build --release     --bin server"
    );
    let final_stage = &df.stages[1];
    assert_eq!(final_stage.base, "${BASE}");
    let keywords: Vec<&str> = final_stage
        .instructions
        .iter()
        .map(|i| i.kind.keyword())
        .collect();
    assert_eq!(
        keywords,
        [
            "LABEL",
            "ENV",
            "RUN",
            "COPY",
            "USER",
            "EXPOSE",
            "HEALTHCHECK",
            "STOPSIGNAL",
            "ENTRYPOINT",
            "CMD"
        ]
    );
    assert_eq!(
        final_stage.instructions[0].kind,
        InstructionKind::Label(pairs(&[
            ("org.opencontainers.image.title", "\"server\""),
            ("org.opencontainers.image.version", "1.0"),
        ]))
    );
    assert_eq!(final_stage.instructions[3].line, 19);
}

#[test]
fn serde_round_trip() {
    let df = ok("FROM x AS a\nHEALTHCHECK --interval=5s CMD true\nONBUILD RUN y\n");
    let json = match serde_json::to_string(&df) {
        Ok(j) => j,
        Err(e) => panic!("{e}"),
    };
    let back: Dockerfile = match serde_json::from_str(&json) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(back, df);
}
