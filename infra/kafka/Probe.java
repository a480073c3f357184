// Answers "is this cluster up?" the way a client sees it: a metadata request
// through the Admin API must return the expected number of brokers, and every
// broker must be reachable. Used by scripts/kafka, never by the engine.
//
// usage: java -cp 'libs/*:probe' Probe <bootstrap> <expected-brokers> <timeout-seconds> [client.properties]
// (the secured cluster passes the admin's SASL_SSL settings as the fourth argument)
import java.io.FileReader;
import java.io.Reader;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public final class Probe {
    public static void main(String[] args) throws Exception {
        if (args.length != 3 && args.length != 4) {
            System.err.println("usage: Probe <bootstrap> <expected-brokers> <timeout-seconds> [client.properties]");
            System.exit(2);
        }
        String bootstrap = args[0];
        int expected = Integer.parseInt(args[1]);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[2]));
        Properties props = new Properties();
        if (args.length == 4) {
            try (Reader in = new FileReader(args[3])) {
                props.load(in);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        String last = "no answer yet";
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                try {
                    DescribeClusterResult cluster = admin.describeCluster();
                    int brokers = cluster.nodes().get(5, TimeUnit.SECONDS).size();
                    String id = cluster.clusterId().get(5, TimeUnit.SECONDS);
                    Node controller = cluster.controller().get(5, TimeUnit.SECONDS);
                    if (brokers >= expected) {
                        System.out.println("cluster " + id + ": " + brokers + " broker(s), controller " + controller.id());
                        return;
                    }
                    last = brokers + " of " + expected + " brokers registered";
                } catch (Exception e) {
                    last = e.getClass().getSimpleName() + ": " + e.getMessage();
                }
                Thread.sleep(500);
            }
        }
        System.err.println("cluster at " + bootstrap + " not ready: " + last);
        System.exit(1);
    }
}
