// Applies ACLs through the Admin API, for the secured test cluster
// (scripts/kafka acls --secure). Reads `kafka-acls.sh ... --add` command lines
// on stdin, exactly as `tradeflow acls --emit kafka-acls` prints them, so the
// tests apply what an operator would run; the Kafka jars scripts/kafka fetches
// hold no kafka-acls.sh (that is kafka-tools) and rdkafka 0.39 has no
// CreateAcls. Lines starting with '#' and blank lines are skipped; every ACL is
// ALLOW from any host. Applying the same ACLs twice changes nothing.
//
// usage: java -cp 'libs/*:probe' Acls <bootstrap> <admin client.properties> < acls.sh
import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public final class Acls {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Acls <bootstrap> <admin client.properties> < acls");
            System.exit(2);
        }
        Properties props = new Properties();
        try (Reader in = new FileReader(args[1])) {
            props.load(in);
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        List<AclBinding> bindings = new ArrayList<>();
        BufferedReader lines = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        int number = 0;
        while ((line = lines.readLine()) != null) {
            number++;
            String trimmed = line.trim();
            if (trimmed.isEmpty() || trimmed.startsWith("#")) continue;
            try {
                bindings.addAll(parse(trimmed));
            } catch (IllegalArgumentException e) {
                System.err.println("line " + number + ": " + e.getMessage());
                System.exit(2);
            }
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get(30, TimeUnit.SECONDS);
        }
        System.out.println(bindings.size() + " ACL(s) applied");
    }

    private static List<AclBinding> parse(String line) {
        List<String> words = split(line);
        String principal = null, name = null;
        ResourceType type = null;
        PatternType pattern = PatternType.LITERAL;
        List<AclOperation> operations = new ArrayList<>();
        boolean add = false;
        for (int i = 0; i < words.size(); i++) {
            String w = words.get(i);
            switch (w) {
                case "--add": add = true; break;
                case "--allow-principal": principal = words.get(++i); break;
                case "--operation": operations.add(AclOperation.fromString(words.get(++i).toUpperCase(Locale.ROOT))); break;
                case "--topic": type = ResourceType.TOPIC; name = words.get(++i); break;
                case "--group": type = ResourceType.GROUP; name = words.get(++i); break;
                case "--transactional-id": type = ResourceType.TRANSACTIONAL_ID; name = words.get(++i); break;
                case "--resource-pattern-type": pattern = PatternType.fromString(words.get(++i).toUpperCase(Locale.ROOT)); break;
                case "--bootstrap-server": case "--command-config": i++; break;
                default: break; // the command itself
            }
        }
        if (!add || principal == null || type == null || operations.isEmpty()
                || operations.contains(AclOperation.UNKNOWN) || pattern == PatternType.UNKNOWN) {
            throw new IllegalArgumentException("not a kafka-acls.sh --add line this tool understands: " + line);
        }
        List<AclBinding> out = new ArrayList<>();
        for (AclOperation op : operations) {
            out.add(new AclBinding(new ResourcePattern(type, name, pattern),
                    new AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW)));
        }
        return out;
    }

    /** Shell-like words: single quotes group, as `tradeflow acls` quotes names. */
    private static List<String> split(String line) {
        List<String> words = new ArrayList<>();
        StringBuilder word = new StringBuilder();
        boolean quoted = false, any = false;
        for (char c : line.toCharArray()) {
            if (c == '\'') { quoted = !quoted; any = true; }
            else if (Character.isWhitespace(c) && !quoted) {
                if (any) { words.add(word.toString()); word.setLength(0); any = false; }
            } else if (c == '\\' && !quoted) { /* line continuation */ }
            else { word.append(c); any = true; }
        }
        if (any) words.add(word.toString());
        return words;
    }
}
