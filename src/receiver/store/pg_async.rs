//! Reads that run on the server's own runtime: one multiplexed PostgreSQL client whose
//! connection task is one more task there. A request that reads (every API call looks its user
//! up) then awaits the answer like any other I/O, instead of handing its worker thread's other
//! tasks to a new thread (`block_in_place`) while a session of its own waits; and the reads
//! of concurrent requests leave together on one connection.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::pg_session::{arg_refs, config, from_pg_row, in_order, pg_args, Answer};
use super::sql::{pg_sql, PgTarget, Result, Row, Value};

pub(super) struct AsyncPg {
    target: PgTarget,
    current: Mutex<Option<Arc<Session>>>,
    /// Held while a new connection is made, so concurrent requests make one.
    connecting: tokio::sync::Mutex<()>,
}

struct Session {
    client: tokio_postgres::Client,
    statements: Mutex<HashMap<String, tokio_postgres::Statement>>,
}

impl AsyncPg {
    pub(super) fn new(target: PgTarget) -> AsyncPg {
        AsyncPg {
            target,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The rows of each query, all sent in one pipeline. A connection the server dropped (a
    /// restart, a failover, a terminated backend) is replaced and the reads are sent once more.
    pub(super) async fn query_all(
        &self,
        queries: &[(String, Vec<Value>)],
    ) -> Result<Vec<Vec<Row>>> {
        let session = self.session().await?;
        match session.query_all(queries).await {
            Err(e) if e.is_connection_lost() || session.client.is_closed() => {
                self.forget(&session);
                self.session().await?.query_all(queries).await
            }
            r => r,
        }
    }

    fn forget(&self, s: &Arc<Session>) {
        if let Ok(mut cur) = self.current.lock() {
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, s)) {
                *cur = None;
            }
        }
    }

    fn live(&self) -> Option<Arc<Session>> {
        let cur = self.current.lock().ok()?;
        cur.as_ref().filter(|s| !s.client.is_closed()).cloned()
    }

    async fn session(&self) -> Result<Arc<Session>> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let (client, conn) = config(&self.target)?.connect(tokio_postgres::NoTls).await?;
        // Ends with the connection; the client then reports itself closed.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let s = Arc::new(Session {
            client,
            statements: Mutex::new(HashMap::new()),
        });
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(s.clone());
        }
        Ok(s)
    }
}

impl Session {
    async fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        let cached = self
            .statements
            .lock()
            .ok()
            .and_then(|m| m.get(sql).cloned());
        if let Some(st) = cached {
            return Ok(st);
        }
        let st = self.client.prepare(&pg_sql(sql)).await?;
        if let Ok(mut m) = self.statements.lock() {
            if m.len() > 256 {
                m.clear();
            }
            m.insert(sql.to_string(), st.clone());
        }
        Ok(st)
    }

    async fn query_all(&self, queries: &[(String, Vec<Value>)]) -> Result<Vec<Vec<Row>>> {
        let mut statements = Vec::with_capacity(queries.len());
        for (sql, _) in queries {
            statements.push(self.statement(sql).await?);
        }
        let args: Vec<_> = queries.iter().map(|(_, v)| pg_args(v)).collect();
        let client = &self.client;
        let mut futs: Vec<Answer<'_, Vec<tokio_postgres::Row>>> = statements
            .iter()
            .zip(&args)
            .map(|(st, a)| -> Answer<'_, Vec<tokio_postgres::Row>> {
                let refs = arg_refs(a);
                Box::pin(async move { client.query(st, &refs).await })
            })
            .collect();
        in_order(&mut futs)
            .await
            .into_iter()
            .map(|r| r?.iter().map(from_pg_row).collect())
            .collect()
    }
}
